package gossip

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/serf/coordinate"
)

// Coordinate is a node's network coordinate, as serf's Vivaldi estimates it
// from the round-trip times of failure-detection probes. The field names
// are Consul's, so the value encodes as Consul's /v1/coordinate answers.
type Coordinate struct {
	// Vec is the position in the Euclidean part of the space, in seconds.
	Vec []float64
	// Error is the estimate's confidence: lower is better.
	Error float64
	// Adjustment is a per-node correction, in seconds, that absorbs what
	// the Euclidean model cannot (added to every distance, when that stays
	// positive).
	Adjustment float64
	// Height models the node's own access link, in seconds.
	Height float64
}

// ErrIncompatibleCoordinates is returned by DistanceTo when two coordinates
// have different dimensions or hold NaN or infinite values, as coordinates
// from a peer with other Vivaldi settings may.
var ErrIncompatibleCoordinates = errors.New("gossip: coordinates are incompatible")

// DistanceTo estimates the round-trip time between c and o as serf and
// Consul do: the Euclidean distance of the vectors plus both heights, plus
// both adjustments unless that would make it negative.
func (c Coordinate) DistanceTo(o Coordinate) (time.Duration, error) {
	a, b := c.serf(), o.serf()
	if !a.IsCompatibleWith(b) || !a.IsValid() || !b.IsValid() {
		return 0, ErrIncompatibleCoordinates
	}
	d := a.DistanceTo(b)
	if d < 0 {
		// Only a peer's negative height can do this.
		return 0, fmt.Errorf("%w: negative distance", ErrIncompatibleCoordinates)
	}
	return d, nil
}

func (c Coordinate) serf() *coordinate.Coordinate {
	return &coordinate.Coordinate{Vec: c.Vec, Error: c.Error, Adjustment: c.Adjustment, Height: c.Height}
}

func convertCoordinate(c *coordinate.Coordinate) Coordinate {
	return Coordinate{Vec: slices.Clone(c.Vec), Error: c.Error, Adjustment: c.Adjustment, Height: c.Height}
}

// Coordinates returns the network coordinate of every member this agent has
// one for, by node name: its own, and those of the peers it has probed
// (each probe's answer carries the peer's coordinate). Members not probed
// yet are missing; with memberlist's round-robin probing every alive
// member is probed within a few probe intervals of joining.
func (c *Cluster) Coordinates() map[string]Coordinate {
	out := make(map[string]Coordinate)
	if c.serf == nil {
		return out
	}
	for _, m := range c.serf.Members() {
		if coord, ok := c.serf.GetCachedCoordinate(m.Name); ok && coord != nil {
			out[m.Name] = convertCoordinate(coord)
		}
	}
	// The local coordinate moves with every probe; the cache holds the one
	// as of the last probe, so ask for the current one.
	if coord, err := c.serf.GetCoordinate(); err == nil && coord != nil {
		out[c.cfg.NodeName] = convertCoordinate(coord)
	}
	return out
}
