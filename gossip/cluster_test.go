package gossip

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// startCluster starts n in-process agents on loopback with fast timers, all
// joined to the first, and waits until each sees n alive members.
func startCluster(t *testing.T, n int) []*Cluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with a hook to adjust each node's config.
// The nodes are shut down together when the test ends.
func startClusterWith(t *testing.T, n int, mod func(i int, cfg *Config)) []*Cluster {
	t.Helper()
	var cs []*Cluster
	for i := range n {
		cfg := TestConfig(fmt.Sprintf("node%d", i))
		if i > 0 {
			cfg.Seeds = []string{cs[0].LocalMember().GossipAddr()}
		}
		if mod != nil {
			mod(i, &cfg)
		}
		c := startNode(t, cfg)
		cs = append(cs, c)
	}
	// Registered after startNode's cleanups, so it runs first: a parallel
	// shutdown costs the slowest node's Shutdown, not the sum.
	t.Cleanup(func() { shutdownAll(cs...) })
	testutil.Wait(t, 10*time.Second, "all members alive", func() bool {
		for _, c := range cs {
			if countAlive(c) != n {
				return false
			}
		}
		return true
	})
	return cs
}

// shutdownAll shuts the clusters down in parallel.
func shutdownAll(cs ...*Cluster) {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { c.Shutdown() })
	}
	wg.Wait()
}

func startNode(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	if cfg.Local == nil {
		cfg.Local = &testOwner{}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown() })
	return c
}

func countAlive(c *Cluster) int {
	n := 0
	for _, m := range c.Catalog().Members() {
		if m.Status == StatusAlive {
			n++
		}
	}
	return n
}

// publisher mimics an owner: it keeps versioned records and publishes them.
type publisher struct {
	c       *Cluster
	version uint64
	records map[string]Record
}

func newPublisher(c *Cluster) *publisher {
	return &publisher{c: c, records: make(map[string]Record)}
}

func (p *publisher) put(s *Service) {
	p.version = NextVersion(p.version, time.Now())
	p.records[s.ID] = Record{ID: s.ID, Version: p.version, Service: s}
	p.publish()
}

func (p *publisher) del(id string) {
	p.version = NextVersion(p.version, time.Now())
	p.records[id] = Record{ID: id, Version: p.version, Deleted: true}
	p.publish()
}

func (p *publisher) publish() {
	d := Delta{Version: p.version}
	for _, r := range p.records {
		d.Records = append(d.Records, r)
	}
	if err := ownerOf(p.c).publish(p.c, d); err != nil {
		panic(err)
	}
}

func hasInstance(c *Cluster, service, id string) bool {
	for _, in := range c.Catalog().Instances(service) {
		if in.Service.ID == id {
			return true
		}
	}
	return false
}

func TestReplicationReachesEveryNode(t *testing.T) {
	cs := startCluster(t, 5)
	p := newPublisher(cs[2])
	p.put(&Service{ID: "web-1", Name: "web", Port: 8080})
	testutil.Wait(t, 5*time.Second, "web-1 everywhere", func() bool {
		for _, c := range cs {
			if !hasInstance(c, "web", "web-1") {
				return false
			}
		}
		return true
	})
	p.del("web-1")
	testutil.Wait(t, 5*time.Second, "web-1 gone everywhere", func() bool {
		for _, c := range cs {
			if hasInstance(c, "web", "web-1") {
				return false
			}
		}
		return true
	})
}

// waitEvery waits until cond holds on every cluster at once.
func waitEvery(t *testing.T, cs []*Cluster, timeout time.Duration, what string, cond func(c *Cluster) bool) {
	t.Helper()
	testutil.Wait(t, timeout, what, func() bool {
		for _, c := range cs {
			if !cond(c) {
				return false
			}
		}
		return true
	})
}

// memberStatus is the status c's catalog holds for the named member.
func memberStatus(c *Cluster, name string) MemberStatus {
	m, ok := c.Catalog().Member(name)
	if !ok {
		return StatusNone
	}
	return m.Status
}

// seesTag reports whether c has learnt owner's advertised catalog version v.
func seesTag(c *Cluster, owner string, v uint64) bool {
	m, ok := c.Catalog().Member(owner)
	return ok && m.CatalogVersion() == v
}

// without returns cs minus the clusters in drop.
func without(cs []*Cluster, drop ...*Cluster) []*Cluster {
	var out []*Cluster
	for _, c := range cs {
		keep := true
		for _, d := range drop {
			keep = keep && c != d
		}
		if keep {
			out = append(out, c)
		}
	}
	return out
}

// pusherIdle reports whether c has no delta waiting to be pushed.
func pusherIdle(c *Cluster) bool {
	c.push.mu.Lock()
	n := len(c.push.pending)
	c.push.mu.Unlock()
	return n == 0 && len(c.push.kick) == 0
}
