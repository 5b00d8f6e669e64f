package gossip

import (
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestTagsAdvertisedAfterAQuietInterval: a burst of changes costs one tag
// update (one broadcast to the cluster), made once the catalog has been
// quiet for TagInterval; changes that never stop are still advertised
// every TagMaxDelay.
func TestTagsAdvertisedAfterAQuietInterval(t *testing.T) {
	cs := startClusterWith(t, 2, func(_ int, c *Config) {
		c.TagInterval = 300 * time.Millisecond
		c.TagMaxDelay = time.Second
	})
	owner, peer := cs[0], cs[1]
	p := newPublisher(owner)
	updates := func() uint64 { return owner.Stats().TagUpdates }
	base := updates()

	for i := range 20 {
		p.put(&Service{ID: "burst", Name: "web", Port: 1000 + i})
	}
	testutil.Wait(t, 5*time.Second, "the burst advertised", func() bool {
		return seesTag(peer, owner.cfg.NodeName, p.version)
	})
	if n := updates() - base; n != 1 {
		t.Errorf("a burst of 20 changes cost %d tag updates, want 1", n)
	}

	// Changes every 100 ms, never quiet for 300 ms, for 2.5 s: advertised
	// about every second all the same.
	base = updates()
	start := time.Now()
	var seen []uint64 // versions the peer saw advertised during the churn
	for i := 0; time.Since(start) < 2500*time.Millisecond; i++ {
		p.put(&Service{ID: "churn", Name: "web", Port: 2000 + i})
		deadline := time.Now().Add(100 * time.Millisecond)
		for time.Now().Before(deadline) {
			if m, ok := peer.Catalog().Member(owner.cfg.NodeName); ok && (len(seen) == 0 || seen[len(seen)-1] != m.CatalogVersion()) {
				seen = append(seen, m.CatalogVersion())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if n := updates() - base; n < 2 || n > 4 {
		t.Errorf("2.5 s of changes every 100 ms cost %d tag updates, want 2 to 4 (one per TagMaxDelay of 1 s)", n)
	}
	if len(seen) < 3 { // the burst's version, then at least two during the churn
		t.Errorf("the peer saw the versions %v advertised during the churn, want a new one about every second", seen)
	}
}
