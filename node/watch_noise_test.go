package node

import (
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestOneWakeUpPerChange checks that a blocking query on a service returns
// once per change, at the owner and at a peer: the owner's advertised
// catalog version, which follows every change in the gossip tags, must not
// move the index a second time.
func TestOneWakeUpPerChange(t *testing.T) {
	as := startAgents(t, 2)
	owner := consulClient(t, as[0])
	reg := &consul.AgentServiceRegistration{Name: "web", ID: "web-1", Port: 8080, Tags: []string{"v1"}}
	if err := owner.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		c := consulClient(t, a)
		testutil.Wait(t, 10*time.Second, "web at "+a.NodeName(), func() bool {
			s, _, err := c.Health().Service("web", "", false, nil)
			return err == nil && len(s) == 1 && len(s[0].Service.Tags) == 1 && s[0].Service.Tags[0] == reg.Tags[0]
		})
	}
	// Let the tag update of the registration settle everywhere.
	for _, a := range as {
		testutil.Wait(t, 10*time.Second, "advertised version settled at "+a.NodeName(), func() bool {
			m, ok := a.Cluster().Catalog().Member("n0")
			return ok && m.CatalogVersion() == as[0].Cluster().Catalog().Version("n0")
		})
	}

	nodeIndexes := func() [2]uint64 {
		e, _, err := consulClient(t, as[1]).Health().Service("web", "", false, nil)
		if err != nil || len(e) != 1 {
			t.Fatalf("health service: %v, %v", e, err)
		}
		return [2]uint64{e[0].Node.ModifyIndex, e[0].Checks[0].ModifyIndex}
	}
	before := nodeIndexes()

	for round, tag := range []string{"v2", "v3"} {
		type wake struct {
			node string
			tags []string
		}
		wakes := make(chan wake, 16)
		stop := make(chan struct{})
		done := make(chan struct{}, len(as))
		// ready gets each watcher's first index: the change must come
		// after it, or the watcher would never see it as a change. (One
		// made before its blocking query starts returns that query at once.)
		ready := make(chan error, len(as))
		for _, a := range as {
			go func(a *Agent) {
				defer func() { done <- struct{}{} }()
				c := consulClient(t, a)
				_, meta, err := c.Health().Service("web", "", false, nil)
				ready <- err
				if err != nil {
					return
				}
				idx := meta.LastIndex
				for {
					s, meta, err := c.Health().Service("web", "", false, &consul.QueryOptions{WaitIndex: idx, WaitTime: time.Second})
					select {
					case <-stop:
						return
					default:
					}
					if err != nil || len(s) != 1 {
						continue
					}
					if meta.LastIndex != idx {
						wakes <- wake{a.NodeName(), s[0].Service.Tags}
						idx = meta.LastIndex
					}
				}
			}(a)
		}
		for range as {
			select {
			case err := <-ready:
				if err != nil {
					t.Fatalf("round %d: a watcher's first query: %v", round, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: the watchers' first queries did not answer in 10 s", round)
			}
		}
		reg.Tags = []string{tag}
		if err := owner.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		// Collect for a while after the change, then count.
		got := map[string]int{}
		deadline := time.After(2 * time.Second)
	collect:
		for {
			select {
			case w := <-wakes:
				got[w.node]++
			case <-deadline:
				break collect
			}
		}
		close(stop)
		for range as {
			<-done
		}
		for _, a := range as {
			if got[a.NodeName()] != 1 {
				t.Errorf("round %d: %s woke %d times for one change, want 1", round, a.NodeName(), got[a.NodeName()])
			}
		}
	}
	// A service change is not a change of its node: the node's and its
	// serfHealth's ModifyIndex stay, as in Consul.
	if after := nodeIndexes(); after != before {
		t.Errorf("node and serfHealth ModifyIndex moved from %v to %v on service changes", before, after)
	}
}
