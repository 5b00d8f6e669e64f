package gossip

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestBlackHoledPeerDelaysOnlyItsOwnQueue black-holes one member (its
// packets vanish, its streams hang: no refusal, only timeouts) for longer
// than the TCP timeout, while it is not failed yet, and registers services
// on the others, where it is the ring successor of one of them. Every
// registration must reach every other member in well under the TCP
// timeout: the pushes to the silent member hang in its own sender, and
// nobody else's wait on them. After the heal it catches up.
func TestBlackHoledPeerDelaysOnlyItsOwnQueue(t *testing.T) {
	const tcpTimeout = 3 * time.Second
	n := NewFaultNetwork()
	nodes := pStartClusterWith(t, n, 5, func(c *Config) {
		slowFailureDetection(c)
		c.Timing.TCPTimeout = tcpTimeout
	})
	silent, owner := nodes[1], nodes[0] // p1 is p0's ring successor
	others := slices.DeleteFunc(slices.Clone(nodes), func(p *pNode) bool { return p == silent })

	n.BlackHole([]string{silent.name}, []string{"p0", "p2", "p3", "p4"})
	start := time.Now()
	const bound = time.Second
	var worst time.Duration
	rounds := 0
	for i := 0; time.Since(start) < tcpTimeout+time.Second; i++ {
		if m, _ := owner.Catalog().Member(silent.name); m.Status != StatusAlive {
			t.Fatalf("%s was declared %s after %v: failure detection came before the scenario ended", silent.name, m.Status, time.Since(start).Round(time.Millisecond))
		}
		on := owner
		if i%2 == 1 {
			on = nodes[2+i%3] // p3, p2, p4, ...
		}
		id := fmt.Sprintf("bh-%d", i)
		on.put(t, id, "web")
		t0 := time.Now()
		took := testutil.Wait(t, tcpTimeout, id+" on every member but the silent one", func() bool {
			for _, p := range others {
				if !pHasInstance(p, on.name, id) {
					return false
				}
			}
			return true
		})
		worst = max(worst, took)
		if took > bound {
			t.Errorf("%s (registered on %s %v after the black hole opened) took %v to reach every other member, want ≤ %v",
				id, on.name, t0.Sub(start).Round(time.Millisecond), took.Round(time.Millisecond), bound)
		}
		rounds++
	}
	t.Logf("%d registrations during a %v black hole (TCP timeout %v): slowest everywhere in %v",
		rounds, time.Since(start).Round(time.Millisecond), tcpTimeout, worst.Round(time.Millisecond))

	n.Heal()
	testutil.Wait(t, 20*time.Second, "the silent member catches up", func() bool {
		for _, p := range others {
			if silent.Catalog().Version(p.name) != p.Catalog().Version(p.name) {
				return false
			}
		}
		return true
	})
}

// slowFailureDetection makes failure detection slower than the black-hole
// scenarios (Lifeguard's suspicion alone is at least 6 × log10(5) × 1 s =
// 4.2 s), so that the silent member stays alive in everyone's view
// throughout, for longer than a 3 s TCP timeout.
func slowFailureDetection(c *Config) {
	c.Timing.ProbeInterval = time.Second
	c.Timing.ProbeTimeout = 500 * time.Millisecond
	c.Timing.SuspicionMult = 6
}

// pHasInstance reports whether p's catalog holds owner's instance id.
func pHasInstance(p *pNode, owner, id string) bool {
	for _, in := range p.Catalog().NodeInstances(owner) {
		if in.Service.ID == id {
			return true
		}
	}
	return false
}

// TestFirstDeltaAfterSilenceGoesRoundIt black-holes a member nobody has
// talked to since, so everyone still takes it for ready, and registers a
// service on its ring predecessor with a fanout of two: pushes to ring
// neighbours only, no random peers, and every backstop (tags, sync) slower
// than the bound. Pushed one way round the ring, the delta would stop at
// the silent member, and its successor would wait for a backstop; pushed
// both ways, it goes round the other way and reaches every other member
// at once.
func TestFirstDeltaAfterSilenceGoesRoundIt(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartClusterWith(t, n, 5, func(c *Config) {
		slowFailureDetection(c)
		c.Fanout = 2
		c.SyncInterval = 30 * time.Second
		c.TagInterval = 10 * time.Second
		c.TagMaxDelay = 30 * time.Second
	})
	silent, owner := nodes[1], nodes[0] // p1 is p0's ring successor
	n.BlackHole([]string{silent.name}, []string{"p0", "p2", "p3", "p4"})
	owner.put(t, "first", "web")
	took := testutil.Wait(t, 5*time.Second, "the first registration on every member but the silent one", func() bool {
		for _, p := range nodes {
			if p != silent && !pHasInstance(p, owner.name, "first") {
				return false
			}
		}
		return true
	})
	if took > time.Second {
		t.Errorf("the first registration after the silence took %v to reach every other member, want ≤ 1s", took.Round(time.Millisecond))
	}
	if m, _ := owner.Catalog().Member(silent.name); m.Status != StatusAlive {
		t.Fatalf("%s is %s: failure detection came before the scenario ended", silent.name, m.Status)
	}
}
