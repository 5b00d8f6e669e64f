package node

import (
	"slices"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// consulClient returns the official Consul client pointed at an agent.
func consulClient(t *testing.T, a *Agent) *consul.Client {
	t.Helper()
	c, err := consul.NewClient(&consul.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConsulClient drives live agents with github.com/hashicorp/consul/api,
// the client most tools embed: every call must decode and mean what it
// means against Consul.
func TestConsulClient(t *testing.T) {
	as := startAgents(t, 3)
	owner, other := consulClient(t, as[1]), consulClient(t, as[2])

	reg := &consul.AgentServiceRegistration{
		ID:      "api-1",
		Name:    "api",
		Tags:    []string{"v1", "primary"},
		Meta:    map[string]string{"team": "core", "version": "1.2.3"},
		Port:    9090,
		Address: "127.0.0.1",
		Weights: &consul.AgentWeights{Passing: 10, Warning: 1},
	}
	if err := owner.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("ServiceRegister: %v", err)
	}

	t.Run("Agent.Services", func(t *testing.T) {
		svcs, err := owner.Agent().Services()
		if err != nil {
			t.Fatal(err)
		}
		s, ok := svcs["api-1"]
		if !ok || len(svcs) != 1 {
			t.Fatalf("services = %v, want just api-1", svcs)
		}
		checkAgentService(t, s)
	})

	t.Run("Agent.Service", func(t *testing.T) {
		s, meta, err := owner.Agent().Service("api-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		checkAgentService(t, s)
		if meta.LastIndex == 0 {
			t.Errorf("LastIndex = 0, want the service's index")
		}
		if _, _, err := owner.Agent().Service("nope", nil); err == nil {
			t.Errorf("Service(nope): no error, want 404")
		}
	})

	t.Run("Agent.Members", func(t *testing.T) {
		ms, err := owner.Agent().Members(false)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range ms {
			names = append(names, m.Name)
			if m.Status != 1 {
				t.Errorf("member %s status %d, want %d (alive)", m.Name, m.Status, 1)
			}
			if m.Addr == "" || m.Port == 0 {
				t.Errorf("member %s has no gossip address: %q:%d", m.Name, m.Addr, m.Port)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"n0", "n1", "n2"}) {
			t.Errorf("members = %v, want n0 n1 n2", names)
		}
	})

	t.Run("Agent.Self", func(t *testing.T) {
		self, err := owner.Agent().Self()
		if err != nil {
			t.Fatal(err)
		}
		if dc := self["Config"]["Datacenter"]; dc != "dc1" {
			t.Errorf("Config.Datacenter = %v, want dc1", dc)
		}
		if n := self["Config"]["NodeName"]; n != "n1" {
			t.Errorf("Config.NodeName = %v, want n1", n)
		}
		name, err := owner.Agent().NodeName()
		if err != nil || name != "n1" {
			t.Errorf("NodeName() = %q, %v; want n1", name, err)
		}
	})

	t.Run("Health.Service on another agent", func(t *testing.T) {
		var entries []*consul.ServiceEntry
		testutil.Wait(t, 5*time.Second, "api-1 passing on n2", func() bool {
			var err error
			entries, _, err = other.Health().Service("api", "", true, nil)
			if err != nil {
				t.Fatal(err)
			}
			return len(entries) == 1
		})
		e := entries[0]
		if e.Node.Node != "n1" || e.Node.Datacenter != "dc1" {
			t.Errorf("node = %s in %s, want n1 in dc1", e.Node.Node, e.Node.Datacenter)
		}
		checkAgentService(t, e.Service)
		if st := e.Checks.AggregatedStatus(); st != consul.HealthPassing {
			t.Errorf("aggregated status %q, want passing", st)
		}
		if len(e.Checks) == 0 || e.Checks[0].CheckID != serfHealthID {
			t.Errorf("checks = %v, want serfHealth first", e.Checks)
		}
	})

	t.Run("Health.Service tag filter", func(t *testing.T) {
		for _, tc := range []struct {
			tag  string
			want int
		}{{"v1", 1}, {"primary", 1}, {"v2", 0}} {
			entries, _, err := other.Health().Service("api", tc.tag, true, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != tc.want {
				t.Errorf("tag %q: %d entries, want %d", tc.tag, len(entries), tc.want)
			}
		}
		entries, _, err := other.Health().ServiceMultipleTags("api", []string{"v1", "primary"}, false, nil)
		if err != nil || len(entries) != 1 {
			t.Errorf("tags v1+primary: %d entries, %v; want 1", len(entries), err)
		}
		entries, _, err = other.Health().ServiceMultipleTags("api", []string{"v1", "v2"}, false, nil)
		if err != nil || len(entries) != 0 {
			t.Errorf("tags v1+v2: %d entries, %v; want 0", len(entries), err)
		}
	})

	t.Run("Catalog.Service and Nodes", func(t *testing.T) {
		cs, meta, err := other.Catalog().Service("api", "v1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || cs[0].ServiceID != "api-1" || cs[0].Node != "n1" || cs[0].ServicePort != 9090 ||
			cs[0].ServiceAddress != "127.0.0.1" || cs[0].ServiceMeta["team"] != "core" {
			t.Errorf("Catalog.Service(api, v1) = %+v", cs)
		}
		if meta.LastIndex == 0 {
			t.Errorf("LastIndex = 0")
		}
		if cs, _, err := other.Catalog().Service("api", "nope", nil); err != nil || len(cs) != 0 {
			t.Errorf("Catalog.Service(api, nope) = %d, %v; want none", len(cs), err)
		}
		nodes, _, err := other.Catalog().Nodes(nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range nodes {
			names = append(names, n.Node)
			if n.Address == "" || n.Datacenter != "dc1" {
				t.Errorf("node %+v: want an address and dc1", n)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"n0", "n1", "n2"}) {
			t.Errorf("nodes = %v, want n0 n1 n2", names)
		}
	})

	t.Run("Status.Leader", func(t *testing.T) {
		leader, err := owner.Status().Leader()
		if err != nil || leader == "" {
			t.Errorf("Leader() = %q, %v; want an address", leader, err)
		}
	})

	t.Run("blocking Catalog.Services", func(t *testing.T) {
		watcher := consulClient(t, as[0])
		svcs, meta, err := watcher.Catalog().Services(nil)
		if err != nil {
			t.Fatal(err)
		}
		if meta.LastIndex < 1 {
			t.Fatalf("LastIndex = %d, want >= 1", meta.LastIndex)
		}
		if _, ok := svcs["api"]; !ok {
			t.Fatalf("services = %v, want api", svcs)
		}
		// Wait for a quiet catalog (no membership or tag traffic left from
		// the start), so that the blocked call below can only be woken by
		// the registration.
		idx := meta.LastIndex
		testutil.Wait(t, 10*time.Second, "a quiet catalog", func() bool {
			_, m, err := watcher.Catalog().Services(&consul.QueryOptions{WaitIndex: idx, WaitTime: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			quiet := m.LastIndex == idx
			idx = m.LastIndex
			return quiet
		})

		// The watcher does what Consul's clients do: re-issue the query
		// with the index it got until the answer changes. A wake may carry
		// an unchanged answer (the owner's version tag can arrive by gossip
		// before the records), so every wake is reported.
		type wake struct {
			svcs map[string][]string
			meta *consul.QueryMeta
			err  error
			at   time.Time
		}
		wakes := make(chan wake, 16)
		start := time.Now()
		go func() {
			defer close(wakes)
			for cur := idx; ; {
				s, m, err := watcher.Catalog().Services(&consul.QueryOptions{WaitIndex: cur, WaitTime: 10 * time.Second})
				wakes <- wake{s, m, err, time.Now()}
				if err != nil || s["late"] != nil || m.LastIndex == cur || time.Since(start) > 10*time.Second {
					return
				}
				cur = m.LastIndex
			}
		}()
		select {
		case w := <-wakes:
			t.Fatalf("blocking query returned after %v, before any change: index %d (was %d), err %v",
				w.at.Sub(start), w.meta.LastIndex, idx, w.err)
		case <-time.After(200 * time.Millisecond):
		}
		registering := time.Now()
		if err := other.Agent().ServiceRegister(&consul.AgentServiceRegistration{Name: "late", Port: 7000}); err != nil {
			t.Fatal(err)
		}
		var last wake
		n, prev := 0, idx
		for w := range wakes {
			n++
			if w.err != nil {
				t.Fatal(w.err)
			}
			if n == 1 && w.at.Before(registering) {
				t.Errorf("first wake %v before the registration", registering.Sub(w.at))
			}
			if w.meta.LastIndex <= prev {
				t.Errorf("wake %d: LastIndex %d, want > %d", n, w.meta.LastIndex, prev)
			}
			prev, last = w.meta.LastIndex, w
		}
		if _, ok := last.svcs["late"]; !ok {
			t.Fatalf("the watcher never saw the new service: %v", last.svcs)
		}
		if d := last.at.Sub(start); d >= 10*time.Second {
			t.Errorf("blocking query ran its full wait (%v): not woken by the change", d)
		}
		t.Logf("watcher saw the new service %v after the registration began, in %d wake(s)",
			last.at.Sub(registering), n)
	})

	t.Run("Agent.ServiceDeregister", func(t *testing.T) {
		if err := owner.Agent().ServiceDeregister("api-1"); err != nil {
			t.Fatal(err)
		}
		svcs, err := owner.Agent().Services()
		if err != nil || len(svcs) != 0 {
			t.Errorf("after deregister: services %v, %v; want none", svcs, err)
		}
		for _, a := range as {
			c := consulClient(t, a)
			testutil.Wait(t, 5*time.Second, "api gone from "+a.NodeName(), func() bool {
				entries, _, err := c.Health().Service("api", "", false, nil)
				if err != nil {
					t.Fatal(err)
				}
				return len(entries) == 0
			})
		}
		if err := owner.Agent().ServiceDeregister("api-1"); err == nil {
			t.Errorf("second deregister: no error, want 404")
		}
	})
}

func checkAgentService(t *testing.T, s *consul.AgentService) {
	t.Helper()
	if s.ID != "api-1" || s.Service != "api" || s.Port != 9090 || s.Address != "127.0.0.1" {
		t.Errorf("service = %s/%s %s:%d, want api-1/api 127.0.0.1:9090", s.ID, s.Service, s.Address, s.Port)
	}
	if !slices.Equal(s.Tags, []string{"v1", "primary"}) {
		t.Errorf("tags = %v, want [v1 primary]", s.Tags)
	}
	if s.Meta["team"] != "core" || s.Meta["version"] != "1.2.3" || len(s.Meta) != 2 {
		t.Errorf("meta = %v", s.Meta)
	}
	if s.Weights.Passing != 10 || s.Weights.Warning != 1 {
		t.Errorf("weights = %+v, want 10/1", s.Weights)
	}
	if s.Datacenter != "dc1" {
		t.Errorf("datacenter = %q, want dc1", s.Datacenter)
	}
}
