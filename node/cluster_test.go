package node

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/gossip"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// instanceIDs lists the service IDs of health entries.
func instanceIDs(es []ServiceEntry) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.Service.ID
	}
	return ids
}

// hasInstance reports whether /v1/health/service/NAME?query on a lists id.
func hasInstance(t *testing.T, a *Agent, name, query, id string) bool {
	t.Helper()
	return slices.Contains(instanceIDs(healthEntries(t, a, name, query)), id)
}

// statusOf is the membership status of node as agent a sees it.
func statusOf(a *Agent, node string) gossip.MemberStatus {
	m, ok := a.Cluster().Catalog().Member(node)
	if !ok {
		return gossip.StatusNone
	}
	return m.Status
}

// serfHealthStatus returns the serfHealth status of the entry with id.
func serfHealthStatus(es []ServiceEntry, id string) string {
	for _, e := range es {
		if e.Service.ID == id {
			for _, c := range e.Checks {
				if c.CheckID == serfHealthID {
					return c.Status
				}
			}
		}
	}
	return ""
}

// TestRegistrationLatency registers 20 services one after the other on one
// of 5 agents and measures, for each, the time from the 200 until every
// agent lists it in /v1/health/service/NAME?passing.
func TestRegistrationLatency(t *testing.T) {
	as := startAgents(t, 5)
	const n = 20
	var lat []time.Duration
	for i := range n {
		name := fmt.Sprintf("lat-%d", i)
		register(t, as[0], fmt.Sprintf(`{"Name":%q,"Port":%d}`, name, 10000+i))
		t0 := time.Now()
		seen := make([]bool, len(as))
		left := len(as)
		for left > 0 {
			for j, a := range as {
				if !seen[j] && hasInstance(t, a, name, "?passing", name) {
					seen[j] = true
					left--
				}
			}
			if left == 0 {
				break
			}
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("%s: visible on %v only after 5s", name, seen)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
	}
	sorted := slices.Clone(lat)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	pct := func(p float64) time.Duration { return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))] }
	t.Logf("registration to ?passing on all %d agents, %d samples: p50 %v, p99 %v, max %v (all: %v)",
		len(as), n, pct(0.50), pct(0.99), sorted[len(sorted)-1], lat)
}

// restartAgent starts an agent again under name on dir (a crashed agent's
// data dir, or a new one), joining the cluster through seed. bind is the
// gossip address to bind; empty picks a new port.
func restartAgent(t *testing.T, name, dir, bind string, seed *Agent) *Agent {
	t.Helper()
	return startAgent(t, name, func(c *Config) {
		c.DataDir = dir
		c.Join = []string{seed.Cluster().LocalMember().GossipAddr()}
		if bind != "" {
			// The catalog port would default to bind+1, which may be taken.
			c.BindAddr, c.RPCAddr = bind, "127.0.0.1:0"
		}
	})
}

// TestCrashedAgent kills an agent (Shutdown without Leave): peers mark it
// failed and its instances critical but keep listing them. Restarted on its
// data dir, under its name but on a new gossip port, it is alive again with
// its services passing everywhere without anyone re-registering them, and
// what it deregistered before the crash stays gone.
func TestCrashedAgent(t *testing.T) {
	dir := t.TempDir()
	as := startAgentsWith(t, 5, func(i int, c *Config) {
		if i == 4 {
			c.DataDir = dir
		}
	})
	victim, live := as[4], as[:4]
	register(t, victim, `{"Name":"web","ID":"web-victim","Port":8080}`)
	register(t, victim, `{"Name":"web","ID":"web-old","Port":8081}`)
	register(t, live[0], `{"Name":"web","ID":"web-0","Port":8080}`)
	if code, body := do(t, victim, "PUT", "/v1/agent/service/deregister/web-old", nil); code != http.StatusOK {
		t.Fatalf("deregister: %d %s", code, body)
	}
	testutil.Wait(t, 5*time.Second, "web-victim and web-0 passing everywhere, web-old nowhere", func() bool {
		for _, a := range as {
			if ids := instanceIDs(healthEntries(t, a, "web", "?passing")); !slices.Equal(ids, []string{"web-0", "web-victim"}) {
				return false
			}
		}
		return true
	})

	oldAddr := victim.Cluster().LocalMember().GossipAddr()
	killed := time.Now()
	victim.Shutdown()
	testutil.Wait(t, 10*time.Second, "n4 failed on every live agent", func() bool {
		for _, a := range live {
			if statusOf(a, "n4") != gossip.StatusFailed {
				return false
			}
		}
		return true
	})
	t.Logf("n4 failed everywhere %v after the crash", time.Since(killed))
	for _, a := range live {
		var members []AgentMember
		_, body := do(t, a, "GET", "/v1/agent/members", nil)
		mustUnmarshal(t, body, &members)
		for _, m := range members {
			if m.Name == "n4" && m.Status != int(gossip.StatusFailed) {
				t.Errorf("%s: agent/members reports n4 with status %d, want %d (failed)", a.NodeName(), m.Status, gossip.StatusFailed)
			}
		}
		if ids := instanceIDs(healthEntries(t, a, "web", "?passing")); !slices.Equal(ids, []string{"web-0"}) {
			t.Errorf("%s: ?passing lists %v, want only web-0", a.NodeName(), ids)
		}
		all := healthEntries(t, a, "web", "")
		if ids := instanceIDs(all); !slices.Equal(ids, []string{"web-0", "web-victim"}) {
			t.Errorf("%s: lists %v, want web-0 and the failed web-victim", a.NodeName(), ids)
		}
		if st := serfHealthStatus(all, "web-victim"); st != gossip.StatusCritical {
			t.Errorf("%s: web-victim serfHealth %q, want critical", a.NodeName(), st)
		}
		if st := serfHealthStatus(all, "web-0"); st != gossip.StatusPassing {
			t.Errorf("%s: web-0 serfHealth %q, want passing", a.NodeName(), st)
		}
	}

	restarted := time.Now()
	// A new port, as after a restart that does not pin it: peers must
	// take the known name at its new address.
	back := restartAgent(t, "n4", dir, "", live[0])
	if newAddr := back.Cluster().LocalMember().GossipAddr(); newAddr == oldAddr {
		t.Fatalf("restarted on the old gossip address %s, want a new one", newAddr)
	}
	everyone := append(slices.Clone(live), back)
	testutil.Wait(t, 15*time.Second, "n4 alive with web-victim passing everywhere", func() bool {
		for _, a := range everyone {
			if statusOf(a, "n4") != gossip.StatusAlive {
				return false
			}
			if ids := instanceIDs(healthEntries(t, a, "web", "?passing")); !slices.Equal(ids, []string{"web-0", "web-victim"}) {
				return false
			}
		}
		return true
	})
	t.Logf("n4 alive and passing everywhere %v after the restart (%v after the crash)",
		time.Since(restarted), time.Since(killed))
	// Give anti-entropy a few rounds to bring anything stale back; it must not.
	deadline := time.Now().Add(3 * back.cfg.Gossip.SyncInterval)
	for time.Now().Before(deadline) {
		for _, a := range everyone {
			if hasInstance(t, a, "web", "", "web-old") {
				t.Fatalf("%s: deregistered web-old came back after the owner restarted", a.NodeName())
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGracefulLeave checks that an agent that leaves takes its services with
// it on every other agent.
func TestGracefulLeave(t *testing.T) {
	as := startAgents(t, 3)
	leaver := as[2]
	register(t, leaver, `{"Name":"web","ID":"web-2","Port":80}`)
	register(t, leaver, `{"Name":"cache","Port":6379}`)
	register(t, as[0], `{"Name":"web","ID":"web-0","Port":80}`)
	testutil.Wait(t, 5*time.Second, "web-2 on every agent", func() bool {
		for _, a := range as {
			if !hasInstance(t, a, "web", "?passing", "web-2") || !hasInstance(t, a, "cache", "?passing", "cache") {
				return false
			}
		}
		return true
	})
	if err := leaver.Leave(); err != nil {
		t.Fatal(err)
	}
	leaver.Shutdown()
	testutil.Wait(t, 10*time.Second, "n2 left and its services gone", func() bool {
		for _, a := range as[:2] {
			if st := statusOf(a, "n2"); st != gossip.StatusLeft && st != gossip.StatusNone {
				return false
			}
			if ids := instanceIDs(healthEntries(t, a, "web", "")); !slices.Equal(ids, []string{"web-0"}) {
				return false
			}
			if len(healthEntries(t, a, "cache", "")) != 0 {
				return false
			}
		}
		return true
	})
	for _, a := range as[:2] {
		var svcs map[string][]string
		code, body := do(t, a, "GET", "/v1/catalog/services", nil)
		if code != http.StatusOK {
			t.Fatalf("catalog/services: %d %s", code, body)
		}
		mustUnmarshal(t, body, &svcs)
		if _, ok := svcs["cache"]; ok {
			t.Errorf("%s: catalog/services still lists cache: %v", a.NodeName(), svcs)
		}
		var nodes []CatalogNode
		_, body = do(t, a, "GET", "/v1/catalog/nodes", nil)
		mustUnmarshal(t, body, &nodes)
		for _, n := range nodes {
			if n.Node == "n2" {
				t.Errorf("%s: catalog/nodes still lists n2", a.NodeName())
			}
		}
	}
}

// TestRestartWithWipedDataDir restarts a crashed agent under its name with
// an empty data dir: the services it had must not come back anywhere.
func TestRestartWithWipedDataDir(t *testing.T) {
	dir := t.TempDir()
	as := startAgentsWith(t, 3, func(i int, c *Config) {
		if i == 2 {
			c.DataDir = dir
		}
	})
	victim := as[2]
	register(t, victim, `{"Name":"web","ID":"web-old","Port":80}`)
	register(t, victim, `{"Name":"cache","Port":6379}`)
	testutil.Wait(t, 5*time.Second, "old services everywhere", func() bool {
		for _, a := range as {
			if !hasInstance(t, a, "web", "?passing", "web-old") || !hasInstance(t, a, "cache", "?passing", "cache") {
				return false
			}
		}
		return true
	})
	addr := victim.Cluster().LocalMember().GossipAddr()
	victim.Shutdown()
	testutil.Wait(t, 10*time.Second, "n2 failed", func() bool {
		return statusOf(as[0], "n2") == gossip.StatusFailed && statusOf(as[1], "n2") == gossip.StatusFailed
	})

	// The same gossip address, as a daemon on a fixed port comes back.
	back := restartAgent(t, "n2", t.TempDir(), addr, as[0])
	if svcs := agentServices(t, back); len(svcs) != 0 {
		t.Fatalf("fresh agent owns %v", svcs)
	}
	register(t, back, `{"Name":"web","ID":"web-new","Port":81}`)
	everyone := []*Agent{as[0], as[1], back}
	testutil.Wait(t, 15*time.Second, "n2 alive with only web-new", func() bool {
		for _, a := range everyone {
			if statusOf(a, "n2") != gossip.StatusAlive {
				return false
			}
			if ids := instanceIDs(healthEntries(t, a, "web", "")); !slices.Equal(ids, []string{"web-new"}) {
				return false
			}
			if len(healthEntries(t, a, "cache", "")) != 0 {
				return false
			}
		}
		return true
	})
}
