package lb

import (
	"maps"
	"slices"
	"sync"
	"testing"
)

// fakeView is a View whose instances tests set. Every Set starts a new
// generation of that service, the way the catalog's per-service
// generations move. It is safe for concurrent use.
type fakeView struct {
	mu       sync.Mutex // guards the fields below
	gen      uint64     // the last generation handed out
	gens     map[string]uint64
	services map[string][]Instance
}

func newFakeView() *fakeView {
	return &fakeView{gens: make(map[string]uint64), services: make(map[string][]Instance)}
}

// Set replaces the instances of a service and starts a new generation of it.
func (v *fakeView) Set(service string, instances ...Instance) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.services[service] = slices.Clone(instances)
	v.gen++
	v.gens[service] = v.gen
}

// Generation implements View.
func (v *fakeView) Generation(service string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gens[service]
}

// Instances implements View. The caller owns the returned slice.
func (v *fakeView) Instances(service string) []Instance {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := slices.Clone(v.services[service])
	for i := range out {
		out[i].Tags = slices.Clone(out[i].Tags)
		out[i].Meta = maps.Clone(out[i].Meta)
	}
	return out
}

var _ View = (*fakeView)(nil)

func TestFakeViewGenerations(t *testing.T) {
	v := newFakeView()
	g0 := v.Generation("web")
	v.Set("web", Instance{ID: "a", Addr: "127.0.0.1:1"})
	if v.Generation("web") == g0 {
		t.Fatal("Set did not start a new generation")
	}
	got := v.Instances("web")
	got[0].Addr = "changed"
	if v.Instances("web")[0].Addr != "127.0.0.1:1" {
		t.Fatal("Instances returned the view's own slice")
	}
	if len(v.Instances("nosuch")) != 0 {
		t.Fatal("unknown service has instances")
	}
}

// TestPoolFollowsView checks that a pool rebuilds its snapshot when the
// generation moves, and that endpoints keep their state across refreshes
// as long as the instance keeps its ID and address.
func TestPoolFollowsView(t *testing.T) {
	v := newFakeView()
	v.Set("web", inst("a", "127.0.0.1:1"), inst("b", "127.0.0.1:2"))
	p := newTestProxy(t, testConfig(), v)
	pl := p.pool("web", "")
	s1 := pl.current()
	if len(s1.all.eps) != 2 {
		t.Fatalf("endpoints = %d, want 2", len(s1.all.eps))
	}
	if pl.current() != s1 {
		t.Fatal("snapshot rebuilt without a generation change")
	}
	v.Set("db", inst("d", "127.0.0.1:5"))
	if pl.current() != s1 {
		t.Fatal("snapshot of web rebuilt for a change to db")
	}
	a := s1.all.eps[0]
	a.inflight.Store(7)

	v.Set("web", inst("a", "127.0.0.1:1"), inst("c", "127.0.0.1:3"))
	s2 := pl.current()
	if s2 == s1 {
		t.Fatal("snapshot not rebuilt after a generation change")
	}
	if ids := epIDs(s2.all.eps); !slices.Equal(ids, []string{"a", "c"}) {
		t.Fatalf("endpoints = %v, want [a c]", ids)
	}
	if s2.all.eps[0] != a || a.inflight.Load() != 7 {
		t.Fatal("endpoint a lost its state across a refresh")
	}

	// Same ID, new address: a new endpoint, fresh state.
	v.Set("web", inst("a", "127.0.0.1:9"))
	s3 := pl.current()
	if s3.all.eps[0] == a || s3.all.eps[0].inflight.Load() != 0 || s3.all.eps[0].addr != "127.0.0.1:9" {
		t.Fatal("endpoint kept across an address change")
	}

	// Duplicates and instances without an address are dropped; weight < 1 is 1.
	v.Set("web", inst("a", "127.0.0.1:9"), inst("a", "127.0.0.1:9"), Instance{ID: "x"}, Instance{ID: "z", Addr: "127.0.0.1:4", Weight: -3})
	s4 := pl.current()
	if ids := epIDs(s4.all.eps); !slices.Equal(ids, []string{"a", "z"}) {
		t.Fatalf("endpoints = %v, want [a z]", ids)
	}
	if w := s4.all.eps[1].weight.Load(); w != 1 {
		t.Fatalf("weight = %d, want 1", w)
	}
}

func epIDs(eps []*endpoint) []string {
	ids := make([]string, len(eps))
	for i, e := range eps {
		ids[i] = e.id
	}
	return ids
}
