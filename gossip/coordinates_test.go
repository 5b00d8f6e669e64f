package gossip

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestCoordinateDistanceTo(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	tests := []struct {
		name string
		a, b Coordinate
		want time.Duration
		err  bool
	}{
		{"same point", Coordinate{Vec: []float64{0, 0}}, Coordinate{Vec: []float64{0, 0}}, 0, false},
		{"euclidean", Coordinate{Vec: []float64{0.003, 0}}, Coordinate{Vec: []float64{0, 0.004}}, ms(5), false},
		{"heights add", Coordinate{Vec: []float64{0.003, 0}, Height: 0.001}, Coordinate{Vec: []float64{0, 0.004}, Height: 0.002}, ms(8), false},
		{"adjustments add", Coordinate{Vec: []float64{0.003, 0}, Adjustment: 0.001}, Coordinate{Vec: []float64{0, 0.004}, Adjustment: 0.001}, ms(7), false},
		{"negative adjustment kept while positive", Coordinate{Vec: []float64{0.003, 0}, Adjustment: -0.001}, Coordinate{Vec: []float64{0, 0.004}}, ms(4), false},
		{"adjustment ignored when it would go negative", Coordinate{Vec: []float64{0.003, 0}, Adjustment: -0.004}, Coordinate{Vec: []float64{0, 0.004}, Adjustment: -0.004}, ms(5), false},
		{"dimensions differ", Coordinate{Vec: []float64{0, 0}}, Coordinate{Vec: []float64{0, 0, 0}}, 0, true},
		{"NaN", Coordinate{Vec: []float64{math.NaN()}}, Coordinate{Vec: []float64{0}}, 0, true},
		{"infinite height", Coordinate{Vec: []float64{0}, Height: math.Inf(1)}, Coordinate{Vec: []float64{0}}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.DistanceTo(tt.b)
			if tt.err {
				if !errors.Is(err, ErrIncompatibleCoordinates) {
					t.Fatalf("DistanceTo = %v, %v; want ErrIncompatibleCoordinates", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := got - tt.want; diff < -time.Microsecond || diff > time.Microsecond {
				t.Errorf("DistanceTo = %v, want %v", got, tt.want)
			}
			if back, _ := tt.b.DistanceTo(tt.a); back != got {
				t.Errorf("not symmetric: %v one way, %v the other", got, back)
			}
		})
	}
}

func TestCoordinatesOfEveryMember(t *testing.T) {
	cs := startCluster(t, 3)
	// Each probe's ack carries the peer's coordinate; fast timers probe
	// every member within a few rounds.
	waitEvery(t, cs, 15*time.Second, "a coordinate of every member", func(c *Cluster) bool {
		return len(c.Coordinates()) == 3
	})
	for _, c := range cs {
		coords := c.Coordinates()
		self := coords[c.cfg.NodeName]
		if len(self.Vec) == 0 {
			t.Fatalf("%s: own coordinate has no vector: %+v", c.cfg.NodeName, self)
		}
		for name, o := range coords {
			d, err := self.DistanceTo(o)
			if err != nil {
				t.Fatalf("%s to %s: %v", c.cfg.NodeName, name, err)
			}
			if d > time.Second {
				t.Errorf("%s to %s: %v on loopback", c.cfg.NodeName, name, d)
			}
		}
	}
	// The map is a copy: changing it does not touch serf's cache.
	coords := cs[0].Coordinates()
	coords[cs[0].cfg.NodeName].Vec[0] = 42
	if again := cs[0].Coordinates()[cs[0].cfg.NodeName]; len(again.Vec) > 0 && again.Vec[0] == 42 {
		t.Error("Coordinates shares its vectors with serf")
	}
}
