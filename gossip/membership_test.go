package gossip

import (
	"testing"
	"time"
)

// TestCrashedOwnerInstancesTurnCriticalThenReaped shuts a node down without
// Leave: the others see it failed and keep its instances as critical, until
// serf reaps it and its instances go.
func TestCrashedOwnerInstancesTurnCriticalThenReaped(t *testing.T) {
	cs := startClusterWith(t, 5, func(_ int, cfg *Config) { cfg.ReapAfter = time.Second })
	owner := cs[4]
	p := newPublisher(owner)
	p.put(&Service{ID: "web-1", Name: "web", Checks: []Check{{ID: "c", Status: StatusPassing}}})
	p.put(&Service{ID: "db-1", Name: "db"})
	waitEvery(t, cs, 5*time.Second, "node4's services everywhere", func(c *Cluster) bool {
		return len(c.Catalog().NodeInstances("node4")) == 2 && seesTag(c, "node4", p.version)
	})

	if err := owner.Shutdown(); err != nil {
		t.Fatal(err)
	}
	others := without(cs, owner)
	waitEvery(t, others, 10*time.Second, "node4 failed, its instances critical", func(c *Cluster) bool {
		if memberStatus(c, "node4") != StatusFailed {
			return false
		}
		in := c.Catalog().NodeInstances("node4")
		if len(in) != 2 {
			return false
		}
		for _, i := range in {
			if i.Status() != StatusCritical {
				return false
			}
		}
		return true
	})
	for _, c := range others {
		// Still listed: Consul shows a failed node's services as critical.
		if got := c.Catalog().Services(); len(got["web"]) != 0 || got["db"] == nil {
			t.Errorf("%s: services %v", c.cfg.NodeName, got)
		}
	}

	waitEvery(t, others, 15*time.Second, "node4 reaped with its services", func(c *Cluster) bool {
		_, known := c.Catalog().Member("node4")
		return !known && len(c.Catalog().NodeInstances("node4")) == 0 && c.Catalog().Version("node4") == 0
	})
	if c := others[0]; len(c.Catalog().Services()) != 0 {
		t.Errorf("services of a reaped node still listed: %v", c.Catalog().Services())
	}
}

// TestLeaveRemovesServices: a node that leaves gracefully takes its services
// with it everywhere, at once rather than after a failure timeout.
func TestLeaveRemovesServices(t *testing.T) {
	cs := startCluster(t, 4)
	leaver := cs[2]
	p := newPublisher(leaver)
	p.put(&Service{ID: "web-1", Name: "web"})
	p.put(&Service{ID: "web-2", Name: "web"})
	q := newPublisher(cs[0])
	q.put(&Service{ID: "web-0", Name: "web"})
	waitEvery(t, cs, 5*time.Second, "3 web instances everywhere", func(c *Cluster) bool {
		return len(c.Catalog().Instances("web")) == 3
	})
	if err := leaver.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := leaver.Shutdown(); err != nil {
		t.Fatal(err)
	}
	others := without(cs, leaver)
	waitEvery(t, others, 5*time.Second, "node2 left with its services", func(c *Cluster) bool {
		return memberStatus(c, "node2") == StatusLeft && len(c.Catalog().Instances("web")) == 1 &&
			c.Catalog().Version("node2") == 0
	})
	for _, c := range others {
		if in := c.Catalog().Instances("web"); len(in) != 1 || in[0].Service.ID != "web-0" {
			t.Errorf("%s: web instances %v", c.cfg.NodeName, catalogIDs(in))
		}
	}
}

// restartOwner shuts owner down without Leave and starts a fresh agent of the
// same name on the same gossip address, with an empty catalog. The catalog
// listener takes a fresh port, as the first life's did: the default, gossip
// port + 1, was never reserved here and may belong to any other process.
func restartOwner(t *testing.T, owner *Cluster, seed *Cluster) *Cluster {
	t.Helper()
	name, addr := owner.cfg.NodeName, owner.LocalMember().GossipAddr()
	if err := owner.Shutdown(); err != nil {
		t.Fatal(err)
	}
	cfg := TestConfig(name)
	cfg.BindAddr = addr
	cfg.RPCAddr = "127.0.0.1:0"
	cfg.Seeds = []string{seed.LocalMember().GossipAddr()}
	return startNode(t, cfg)
}

// TestRestartedOwnerWithEmptyStateRemovesOldServices: an owner that comes
// back with an empty data dir publishes a newer, empty catalog; what it
// published in its previous life must disappear everywhere and stay gone.
func TestRestartedOwnerWithEmptyStateRemovesOldServices(t *testing.T) {
	testRestartedOwnerWithEmptyState(t, func(v uint64) Delta { return Delta{Version: v} })
}

// TestRestartedOwnerDeclaringItsFloorRemovesOldServices is the same restart,
// with the fresh owner declaring that it holds no tombstones from before its
// first version (Since = Version), which forces full deltas to peers.
func TestRestartedOwnerDeclaringItsFloorRemovesOldServices(t *testing.T) {
	testRestartedOwnerWithEmptyState(t, func(v uint64) Delta { return Delta{Since: v, Version: v} })
}

func testRestartedOwnerWithEmptyState(t *testing.T, firstPublish func(v uint64) Delta) {
	cs := startCluster(t, 5)
	p := newPublisher(cs[4])
	p.put(&Service{ID: "web-1", Name: "web"})
	p.put(&Service{ID: "web-2", Name: "web"})
	waitEvery(t, cs, 5*time.Second, "node4's services everywhere", func(c *Cluster) bool {
		return len(c.Catalog().NodeInstances("node4")) == 2 && seesTag(c, "node4", p.version)
	})
	oldVersion := p.version

	fresh := restartOwner(t, cs[4], cs[0])
	nodes := append(without(cs, cs[4]), fresh)
	waitEvery(t, nodes, 10*time.Second, "node4 back and alive", func(c *Cluster) bool {
		return memberStatus(c, "node4") == StatusAlive && countAlive(c) == 5
	})
	v := NextVersion(0, time.Now())
	if v <= oldVersion {
		t.Fatalf("fresh version %d not above the old %d", v, oldVersion)
	}
	if err := ownerOf(fresh).publish(fresh, firstPublish(v)); err != nil {
		t.Fatal(err)
	}
	waitEvery(t, nodes, 10*time.Second, "node4's old services gone everywhere", func(c *Cluster) bool {
		return c.Catalog().Version("node4") == v && len(c.Catalog().Instances("web")) == 0
	})

	// New registrations of the fresh owner replicate; the old ones stay gone.
	fp := newPublisher(fresh)
	fp.version = v
	fp.put(&Service{ID: "web-3", Name: "web"})
	waitEvery(t, nodes, 5*time.Second, "only web-3 everywhere", func(c *Cluster) bool {
		in := c.Catalog().Instances("web")
		return len(in) == 1 && in[0].Service.ID == "web-3" && in[0].Node.Name == "node4"
	})
}

// TestRestartOnNewAddressKeepsGossiping restarts a member under its name on
// another address before anyone has noticed the crash, so every peer still
// holds the old address as alive and answers a name-conflict vote with it.
// The new agent must keep gossiping and take its name back once the old
// address is dead, rather than lose serf's vote and shut its gossip down
// while the agent runs on.
func TestRestartOnNewAddressKeepsGossiping(t *testing.T) {
	cs := startCluster(t, 4)
	old := cs[3]
	oldAddr := old.LocalMember().GossipAddr()
	if err := old.Shutdown(); err != nil {
		t.Fatal(err)
	}
	cfg := TestConfig(old.cfg.NodeName)
	cfg.Seeds = []string{cs[0].LocalMember().GossipAddr()}
	fresh := startNode(t, cfg)
	newAddr := fresh.LocalMember().GossipAddr()
	if newAddr == oldAddr {
		t.Fatalf("restarted on the same address %s", newAddr)
	}
	nodes := append(without(cs, old), fresh)
	waitEvery(t, nodes, 30*time.Second, "node3 alive at its new address everywhere", func(c *Cluster) bool {
		m, ok := c.Catalog().Member("node3")
		return ok && m.Status == StatusAlive && m.GossipAddr() == newAddr && countAlive(c) == 4
	})
	// Gossip still runs on the restarted member: a change of its reaches
	// the others.
	p := newPublisher(fresh)
	p.put(&Service{ID: "web-1", Name: "web"})
	waitEvery(t, nodes, 5*time.Second, "node3's new service everywhere", func(c *Cluster) bool {
		return len(c.Catalog().NodeInstances("node3")) == 1 && seesTag(c, "node3", p.version)
	})
}
