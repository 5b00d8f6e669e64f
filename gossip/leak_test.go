package gossip

import (
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestShutdownEndsExchangesInFlight: a sender hanging on a black-holed
// peer (for up to the TCP timeout) is ended by Shutdown at once, and no
// goroutine of the cluster is left.
func TestShutdownEndsExchangesInFlight(t *testing.T) {
	check := testutil.NoLeaks(t)
	n := NewFaultNetwork()
	nodes := pStartClusterWith(t, n, 3, func(c *Config) {
		c.Timing.TCPTimeout = 30 * time.Second
	})
	n.BlackHole([]string{"p1"}, []string{"p0", "p2"})
	nodes[0].put(t, "web-1", "web") // p1 is p0's successor: its sender hangs
	testutil.Wait(t, 5*time.Second, "p0's exchange with p1 hanging", func() bool {
		return !nodes[0].send.ready(nodes[1].RPCAddr())
	})
	start := time.Now()
	var cs []*Cluster
	for _, p := range nodes {
		cs = append(cs, p.Cluster)
	}
	shutdownAll(cs...)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Shutdown took %v: it waited for the exchange in the black hole", took)
	}
	// Memberlist's own streams into the hole (push/pull) are not the
	// cluster's to end: let them fail now.
	n.Heal()
	check()
}
