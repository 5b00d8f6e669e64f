package gossip

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// Partition tests run in-process clusters whose traffic goes through one
// FaultNetwork. Set SHOAL_TEST_LOG=1 to see the agents' debug logs.

// pNode is one agent of a partition test and the owner of its services: it
// keeps the versioned records it publishes, as node's registry would.
type pNode struct {
	*Cluster
	name    string
	version uint64
	records map[string]Record
}

// pStart starts an agent named name on network n, joining seeds.
func pStart(t *testing.T, n *FaultNetwork, name string, seeds ...string) *pNode {
	t.Helper()
	return pStartWith(t, n, name, nil, seeds...)
}

// pStartWith is pStart with an adjustment of the configuration.
func pStartWith(t *testing.T, n *FaultNetwork, name string, adjust func(*Config), seeds ...string) *pNode {
	t.Helper()
	cfg := TestConfig(name)
	cfg.Network = n
	cfg.Seeds = seeds
	cfg.Local = &testOwner{}
	if adjust != nil {
		adjust(&cfg)
	}
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Shutdown() })
	return &pNode{Cluster: c, name: name, records: make(map[string]Record)}
}

// pStartCluster starts size agents p0, p1, ... on n and waits until every
// one sees all of them alive.
func pStartCluster(t *testing.T, n *FaultNetwork, size int) []*pNode {
	t.Helper()
	return pStartClusterWith(t, n, size, nil)
}

// pStartClusterWith is pStartCluster with every agent's config adjusted.
func pStartClusterWith(t *testing.T, n *FaultNetwork, size int, adjust func(*Config)) []*pNode {
	t.Helper()
	var nodes []*pNode
	for i := range size {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].LocalMember().GossipAddr()}
		}
		nodes = append(nodes, pStartWith(t, n, fmt.Sprintf("p%d", i), adjust, seeds...))
	}
	testutil.Wait(t, 15*time.Second, "every member alive everywhere", func() bool {
		return pSeesStatus(nodes, nodes, StatusAlive)
	})
	return nodes
}

// put registers (or updates) a service instance and publishes the catalog.
func (p *pNode) put(t *testing.T, id, service string) {
	t.Helper()
	p.version = NextVersion(p.version, time.Now())
	p.records[id] = Record{ID: id, Version: p.version,
		Service: &Service{ID: id, Name: service, Port: int(p.version % 50000)}}
	p.publish(t)
}

// del deregisters a service instance, leaving a tombstone.
func (p *pNode) del(t *testing.T, id string) {
	t.Helper()
	p.version = NextVersion(p.version, time.Now())
	p.records[id] = Record{ID: id, Version: p.version, Deleted: true}
	p.publish(t)
}

func (p *pNode) publish(t *testing.T) {
	t.Helper()
	d := Delta{Version: p.version, Records: slices.Collect(maps.Values(p.records))}
	if err := ownerOf(p.Cluster).publish(p.Cluster, d); err != nil {
		t.Fatal(err)
	}
}

// pView is a comparable view of a catalog: "owner/id" → version.
type pView map[string]uint64

func pViewOf(c *Catalog) pView {
	v := make(pView)
	for _, in := range c.AllInstances() {
		v[in.Node.Name+"/"+in.Service.ID] = in.Version
	}
	return v
}

// pTruth is what every replica should converge to: each owner's own view of
// its services.
func pTruth(nodes []*pNode) pView {
	v := make(pView)
	for _, p := range nodes {
		for _, in := range p.Catalog().NodeInstances(p.name) {
			v[p.name+"/"+in.Service.ID] = in.Version
		}
	}
	return v
}

func (v pView) String() string {
	keys := slices.Sorted(maps.Keys(v))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s@%d", k, v[k])
	}
	return b.String()
}

// pConverged reports whether every node holds exactly the owners' truth.
func pConverged(nodes []*pNode) bool {
	truth := pTruth(nodes)
	for _, p := range nodes {
		if !maps.Equal(pViewOf(p.Catalog()), truth) {
			return false
		}
	}
	return true
}

// pConvergedAbout reports whether every observer holds exactly the owners'
// truth about owners (whatever else it holds).
func pConvergedAbout(observers, owners []*pNode) bool {
	truth := pTruth(owners)
	for _, o := range observers {
		view := pViewOf(o.Catalog())
		maps.DeleteFunc(view, func(key string, _ uint64) bool {
			return !slices.ContainsFunc(owners, func(p *pNode) bool { return strings.HasPrefix(key, p.name+"/") })
		})
		if !maps.Equal(view, truth) {
			return false
		}
	}
	return true
}

// pSeesStatus reports whether every observer sees every subject (other than
// itself) with the given status.
func pSeesStatus(observers, subjects []*pNode, status MemberStatus) bool {
	for _, o := range observers {
		for _, s := range subjects {
			if o == s {
				continue
			}
			if m, ok := o.Catalog().Member(s.name); !ok || m.Status != status {
				return false
			}
		}
	}
	return true
}

func pNames(nodes []*pNode) []string {
	out := make([]string, len(nodes))
	for i, p := range nodes {
		out[i] = p.name
	}
	return out
}

// pResurrected returns the nodes that hold any of the given "owner/id"
// instances.
func pResurrected(nodes []*pNode, gone []string) []string {
	var out []string
	for _, p := range nodes {
		v := pViewOf(p.Catalog())
		for _, key := range gone {
			if _, ok := v[key]; ok {
				out = append(out, p.name+" holds "+key)
			}
		}
	}
	sort.Strings(out)
	return out
}

// A 2|3 partition of five agents: both sides change (register, deregister
// services from before the partition), then the partition heals and every
// replica converges to the owners' truth, with nothing deregistered coming
// back.
func TestPartitionHealConverges(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartCluster(t, n, 5)
	for _, p := range nodes {
		p.put(t, p.name+"-a", "web")
		p.put(t, p.name+"-b", "api")
	}
	testutil.Wait(t, 10*time.Second, "the catalog before the partition", func() bool {
		return len(pTruth(nodes)) == 10 && pConverged(nodes)
	})

	left, right := nodes[:2], nodes[2:]
	n.Partition(pNames(left), pNames(right))
	took := testutil.Wait(t, 15*time.Second, "each side to see the other failed", func() bool {
		return pSeesStatus(left, right, StatusFailed) && pSeesStatus(right, left, StatusFailed) &&
			pSeesStatus(left, left, StatusAlive) && pSeesStatus(right, right, StatusAlive)
	})
	t.Logf("partition detected after %v", took)

	// Changes on both sides: p0 and p3 deregister services from before the
	// partition, p1 and p4 register new ones, p2 does both.
	nodes[0].del(t, "p0-a")
	nodes[1].put(t, "p1-new", "web")
	nodes[2].del(t, "p2-b")
	nodes[2].put(t, "p2-new", "api")
	nodes[3].del(t, "p3-a")
	nodes[4].put(t, "p4-new", "web")
	gone := []string{"p0/p0-a", "p2/p2-b", "p3/p3-a"}
	goneLeft, goneRight := gone[:1], gone[1:]

	// Each side converges among itself, and nothing crosses the partition.
	testutil.Wait(t, 10*time.Second, "each side to converge among itself", func() bool {
		l, r := pViewOf(left[0].Catalog()), pViewOf(right[0].Catalog())
		return pConvergedAbout(left, left) && pConvergedAbout(right, right) &&
			l["p1/p1-new"] != 0 && r["p2/p2-new"] != 0 && r["p4/p4-new"] != 0 &&
			len(pResurrected(left, goneLeft)) == 0 && len(pResurrected(right, goneRight)) == 0
	})
	testutil.Holds(t, time.Second, "the partition of the catalog", func() bool {
		l, r := pViewOf(left[1].Catalog()), pViewOf(right[2].Catalog())
		_, lSeesNew := l["p4/p4-new"]
		_, rSeesNew := r["p1/p1-new"]
		// Deregistrations do not cross either: the other side keeps the
		// services from before the partition.
		return !lSeesNew && !rSeesNew && len(pResurrected(left, goneRight)) == len(left)*len(goneRight) &&
			len(pResurrected(right, goneLeft)) == len(right)*len(goneLeft)
	})

	n.Heal()
	healed := time.Now()
	membership := testutil.Wait(t, 15*time.Second, "every member alive everywhere after heal", func() bool {
		return pSeesStatus(nodes, nodes, StatusAlive)
	})
	catalog := testutil.Wait(t, 15*time.Second, "every replica to converge after heal", func() bool {
		if held := pResurrected(nodes[:2], goneLeft); len(held) > 0 {
			t.Fatalf("deregistered service back on its own side: %v", held)
		}
		if held := pResurrected(nodes[2:], goneRight); len(held) > 0 {
			t.Fatalf("deregistered service back on its own side: %v", held)
		}
		return pConverged(nodes)
	})
	t.Logf("after heal: membership converged in %v, catalog in %v (%v since heal)",
		membership, membership+catalog, time.Since(healed))
	if truth := pTruth(nodes); len(truth) != 10 {
		t.Fatalf("converged to %d instances, want 10:%v", len(truth), truth)
	}

	// Anti-entropy keeps running (sync every 500 ms, push/pull every 2 s):
	// nothing deregistered may come back meanwhile.
	testutil.Holds(t, 2500*time.Millisecond, "convergence without resurrection", func() bool {
		return len(pResurrected(nodes, gone)) == 0 && pConverged(nodes)
	})
}

// A stale peer: p4 is cut off holding an old version of p1's catalog, while
// p1 deregisters a service and a fresh agent joins on p4's side. After the
// heal neither brings the service back, on any node.
func TestPartitionStalePeerDoesNotResurrect(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartCluster(t, n, 5)
	owner, stale := nodes[1], nodes[4]
	owner.put(t, "old", "web")
	owner.put(t, "kept", "web")
	testutil.Wait(t, 10*time.Second, "the catalog before the partition", func() bool {
		return len(pTruth(nodes)) == 2 && pConverged(nodes)
	})

	// "p5" joins later, on the stale side.
	main := nodes[:4]
	n.Partition([]string{stale.name, "p5"}, pNames(main))
	took := testutil.Wait(t, 10*time.Second, "the main side to see the stale peer failed", func() bool {
		return pSeesStatus(main, []*pNode{stale}, StatusFailed)
	})
	t.Logf("main side saw the partition after %v", took)

	owner.del(t, "old")
	owner.put(t, "kept", "web") // a newer version of a surviving service
	owner.put(t, "new", "web")
	testutil.Wait(t, 10*time.Second, "the main side to converge", func() bool { return pConverged(main) })
	if v := pViewOf(stale.Catalog()); v["p1/old"] == 0 {
		t.Fatalf("the stale peer lost p1/old during the partition:%v", v)
	}

	// While the stale peer still believes p1 alive, the fresh agent hears of
	// p1 from it and may replicate the stale catalog; once it believes p1
	// dead, the fresh agent never hears of p1 (memberlist passes on no dead
	// members) until the heal. Either way the heal must clean up.
	fresh := pStart(t, n, "p5", stale.LocalMember().GossipAddr())
	took = testutil.Wait(t, 15*time.Second, "the stale side to see the main side failed", func() bool {
		return pSeesStatus([]*pNode{stale}, main, StatusFailed) &&
			pSeesStatus([]*pNode{stale, fresh}, []*pNode{stale, fresh}, StatusAlive)
	})
	_, learnt := pViewOf(fresh.Catalog())["p1/old"]
	t.Logf("stale side saw the partition %v later; the fresh agent learnt the stale catalog: %v", took, learnt)
	all := append(slices.Clone(nodes), fresh)

	n.Heal()
	took = testutil.Wait(t, 15*time.Second, "every replica to converge after heal", func() bool {
		if held := pResurrected(main, []string{"p1/old"}); len(held) > 0 {
			t.Fatalf("stale service resurrected: %v", held)
		}
		return pSeesStatus(all, all, StatusAlive) && pConverged(all)
	})
	t.Logf("after heal: converged in %v", took)
	testutil.Holds(t, 2500*time.Millisecond, "convergence without resurrection", func() bool {
		return len(pResurrected(all, []string{"p1/old"})) == 0 && pConverged(all)
	})
}

// One direction between p0 and p1 drops everything, so every stream between
// them fails too: updates still reach both through the other agents.
func TestPartitionOneWayDrop(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartCluster(t, n, 5)
	a, b := nodes[0], nodes[1]
	n.Drop(a.name, b.name)

	for round := range 3 {
		a.put(t, fmt.Sprintf("a-%d", round), "web")
		b.put(t, fmt.Sprintf("b-%d", round), "web")
		if round > 0 {
			a.del(t, fmt.Sprintf("a-%d", round-1))
			b.del(t, fmt.Sprintf("b-%d", round-1))
		}
		took := testutil.Wait(t, 10*time.Second, "updates across the dropped link", func() bool {
			return len(pTruth(nodes)) == 2 && pConverged(nodes)
		})
		t.Logf("round %d: converged in %v", round, took)
	}
	// Failure detection routes around the dropped direction too: indirect
	// probes through the others carry the pings and acks that are lost.
	testutil.Holds(t, 2*time.Second, "p0 and p1 alive to each other", func() bool {
		return pSeesStatus([]*pNode{a, b}, []*pNode{a, b}, StatusAlive)
	})
	a.del(t, "a-2")
	b.del(t, "b-2")
	testutil.Wait(t, 10*time.Second, "the last deregistrations everywhere", func() bool {
		return len(pTruth(nodes)) == 0 && pConverged(nodes)
	})
}

// A partition too brief for failure detection: the eager pushes across it
// are lost, and nothing retries them, so the far side learns the change from
// the backstop (the owner's version in its tags, via memberlist's push/pull).
func TestPartitionBriefHealsByAntiEntropy(t *testing.T) {
	n := NewFaultNetwork()
	nodes := pStartCluster(t, n, 5)
	left, right := nodes[:2], nodes[2:]

	n.Partition(pNames(left), pNames(right))
	nodes[0].put(t, "brief", "web")
	testutil.Wait(t, 5*time.Second, "the change on its own side", func() bool { return pConvergedAbout(left, left) })
	testutil.Holds(t, 200*time.Millisecond, "the partition of the catalog", func() bool {
		return len(pViewOf(right[0].Catalog())) == 0
	})
	n.Heal()
	took := testutil.Wait(t, 10*time.Second, "every replica to converge after heal", func() bool {
		return pConverged(nodes) && len(pTruth(nodes)) == 1
	})
	t.Logf("after heal: converged in %v", took)
}
