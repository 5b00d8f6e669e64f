package lb

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"
)

var allPolicies = []string{PolicyRoundRobin, PolicyRandom, PolicyLeastRequest, PolicyEWMA, PolicyLatency, PolicyHash}

// policyPool builds an unstarted proxy whose service "web" has one
// endpoint per weight, named e000, e001, ... in weight order.
func policyPool(t testing.TB, cfg Config, policy string, weights ...int) (*Proxy, *fakeView, *snapshot) {
	t.Helper()
	cfg.Policy = policy
	v := newFakeView()
	v.Set("web", weightedInstances(weights...)...)
	p := newTestProxy(t, cfg, v)
	return p, v, p.pool("web", "").current()
}

func weightedInstances(weights ...int) []Instance {
	ins := make([]Instance, len(weights))
	for i, w := range weights {
		ins[i] = Instance{ID: fmt.Sprintf("e%03d", i), Addr: "127.0.0.1:" + strconv.Itoa(10000+i), Weight: w}
	}
	return ins
}

func uniform(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

// counts picks n times and returns how often each endpoint was chosen, in
// the snapshot's order.
func counts(t testing.TB, p *Proxy, s *snapshot, n int) []int {
	t.Helper()
	index := make(map[*endpoint]int, len(s.all.eps))
	for i, e := range s.all.eps {
		index[e] = i
	}
	c := make([]int, len(s.all.eps))
	for range n {
		e := s.pick(p, new(selection), "", nil)
		if e == nil {
			t.Fatal("pick returned nil")
		}
		c[index[e]]++
	}
	return c
}

// checkShares fails when a count is off its weight's share by more than tol
// (relative).
func checkShares(t *testing.T, got []int, weights []int, tol float64) {
	t.Helper()
	total, wsum := 0, 0
	for i := range got {
		total += got[i]
		wsum += weights[i]
	}
	for i, c := range got {
		want := float64(total) * float64(weights[i]) / float64(wsum)
		if math.Abs(float64(c)-want) > tol*want {
			t.Errorf("endpoint %d (weight %d): %d picks, want %.0f ± %.0f%% (all: %v)", i, weights[i], c, want, tol*100, got)
		}
	}
}

func TestRoundRobinUniformIsExact(t *testing.T) {
	p, _, s := policyPool(t, testConfig(), PolicyRoundRobin, 1, 1, 1)
	got := counts(t, p, s, 3000)
	if !slices.Equal(got, []int{1000, 1000, 1000}) {
		t.Fatalf("round robin over 3: %v, want 1000 each", got)
	}
	// Strict rotation: each endpoint once in every window of 3.
	var seq []*endpoint
	for range 30 {
		seq = append(seq, s.pick(p, new(selection), "", nil))
	}
	for i := 3; i < len(seq); i++ {
		if seq[i] != seq[i-3] {
			t.Fatalf("pick %d breaks the rotation", i)
		}
	}
}

func TestRoundRobinSmoothWeighted(t *testing.T) {
	weights := []int{1, 2, 3}
	p, _, s := policyPool(t, testConfig(), PolicyRoundRobin, weights...)
	if s.all.uniform {
		t.Fatal("snapshot with weights 1:2:3 says uniform")
	}
	const cycles = 1000
	index := map[*endpoint]int{s.all.eps[0]: 0, s.all.eps[1]: 1, s.all.eps[2]: 2}
	got := make([]int, 3)
	run, longest, last := 0, 0, -1
	for range 6 * cycles {
		i := index[s.pick(p, new(selection), "", nil)]
		got[i]++
		if i == last {
			run++
		} else {
			run, last = 1, i
		}
		longest = max(longest, run)
	}
	if !slices.Equal(got, []int{cycles, 2 * cycles, 3 * cycles}) {
		t.Fatalf("weighted round robin 1:2:3 over %d picks: %v", 6*cycles, got)
	}
	// nginx's smooth schedule for 1:2:3 is c b a c b c: the heaviest
	// endpoint never comes more than twice in a row (across cycles).
	if longest > 2 {
		t.Fatalf("longest burst on one endpoint: %d picks, want ≤ 2", longest)
	}
}

func TestSmoothScheduleCapsLargeWeights(t *testing.T) {
	p, _, s := policyPool(t, testConfig(), PolicyRoundRobin, 10000, 30000, 1)
	rr := s.all.policy.(*RoundRobin)
	if len(rr.schedule) > 4096+3 || len(rr.schedule) == 0 {
		t.Fatalf("schedule has %d slots", len(rr.schedule))
	}
	got := counts(t, p, s, 40000)
	if got[2] == 0 {
		t.Error("weight-1 endpoint never picked: scaling must keep every endpoint")
	}
	checkShares(t, got[:2], []int{1, 3}, 0.02)
}

func TestRandomProportionalToWeights(t *testing.T) {
	for _, weights := range [][]int{{1, 1, 1}, {1, 2, 3}} {
		p, _, s := policyPool(t, testConfig(), PolicyRandom, weights...)
		checkShares(t, counts(t, p, s, 60000), weights, 0.06)
	}
}

func TestLeastRequestProportionalToWeights(t *testing.T) {
	// With nothing in flight the two draws tie and the first wins, so the
	// distribution is the weighted random one.
	for _, weights := range [][]int{{1, 1, 1}, {1, 2, 3}} {
		p, _, s := policyPool(t, testConfig(), PolicyLeastRequest, weights...)
		checkShares(t, counts(t, p, s, 60000), weights, 0.06)
	}
}

func TestLeastRequestPrefersFewerInFlight(t *testing.T) {
	p, _, s := policyPool(t, testConfig(), PolicyLeastRequest, 1, 1, 1)
	s.all.eps[1].inflight.Store(10)
	got := counts(t, p, s, 30000)
	// The loaded endpoint wins only when both draws land on it: rare.
	if share := float64(got[1]) / 30000; share > 0.02 {
		t.Fatalf("loaded endpoint got %.1f%% of picks (%v), want < 2%%", share*100, got)
	}
	checkShares(t, []int{got[0], got[2]}, []int{1, 1}, 0.06)

	// In-flight counts are per unit of weight: 4 in flight on weight 4
	// beats 2 on weight 1.
	p, _, s = policyPool(t, testConfig(), PolicyLeastRequest, 4, 1)
	s.all.eps[0].inflight.Store(4)
	s.all.eps[1].inflight.Store(2)
	got = counts(t, p, s, 10000)
	if got[0] < 9500 {
		t.Fatalf("weighted least request: %v, want nearly all on the heavy endpoint", got)
	}
}

func TestEWMAPrefersLowerLatency(t *testing.T) {
	p, _, s := policyPool(t, testConfig(), PolicyEWMA, 1, 1, 1)
	now := time.Now().UnixNano()
	s.all.eps[0].observeLatency(time.Millisecond, now)
	s.all.eps[1].observeLatency(100*time.Millisecond, now)
	s.all.eps[2].observeLatency(2*time.Millisecond, now)
	got := counts(t, p, s, 30000)
	if share := float64(got[1]) / 30000; share > 0.02 {
		t.Fatalf("slow endpoint got %.1f%% of picks (%v), want < 2%%", share*100, got)
	}
	if got[0] <= got[2] {
		t.Fatalf("1 ms endpoint (%d) should beat 2 ms endpoint (%d)", got[0], got[2])
	}

	// Load counts too: a fast endpoint with many requests in flight loses
	// to a slower idle one.
	s.all.eps[0].inflight.Store(100)
	got = counts(t, p, s, 30000)
	if share := float64(got[0]) / 30000; share > 0.02 {
		t.Fatalf("loaded fast endpoint got %.1f%% of picks (%v)", share*100, got)
	}
}

func TestEWMAPeakAndDecay(t *testing.T) {
	e := newEndpoint(Instance{ID: "a", Addr: "x", Weight: 1}, time.Second, nil)
	now := time.Now().UnixNano()
	e.observeLatency(10*time.Millisecond, now)
	e.observeLatency(100*time.Millisecond, now+int64(time.Millisecond))
	if got := math.Float64frombits(e.ewma.Load()); got != float64(100*time.Millisecond) {
		t.Fatalf("a slower sample must be taken at once: ewma = %v", time.Duration(got))
	}
	// A fast sample long after decays the peak almost entirely.
	e.observeLatency(time.Millisecond, now+int64(time.Minute))
	if got := time.Duration(math.Float64frombits(e.ewma.Load())); got > 2*time.Millisecond {
		t.Fatalf("ewma after a minute of fast samples = %v", got)
	}
	// A fast sample right after only nudges it.
	e.observeLatency(100*time.Millisecond, now+int64(2*time.Minute))
	e.observeLatency(time.Millisecond, now+int64(2*time.Minute)+int64(time.Millisecond))
	if got := time.Duration(math.Float64frombits(e.ewma.Load())); got < 90*time.Millisecond {
		t.Fatalf("ewma dropped to %v within a millisecond", got)
	}
}

func hashPicks(t testing.TB, p *Proxy, s *snapshot, keys int) map[string]string {
	t.Helper()
	out := make(map[string]string, keys)
	for k := range keys {
		key := "user-" + strconv.Itoa(k)
		e := s.pick(p, new(selection), key, nil)
		if e == nil {
			t.Fatal("hash pick returned nil")
		}
		out[key] = e.id
	}
	return out
}

func TestHashStableAndMinimalMovement(t *testing.T) {
	const keys = 3000
	p, v, s := policyPool(t, testConfig(), PolicyHash, 1, 1, 1)
	before := hashPicks(t, p, s, keys)
	if again := hashPicks(t, p, s, keys); !mapsEqual(before, again) {
		t.Fatal("same key went to different endpoints")
	}
	perEP := map[string]int{}
	for _, id := range before {
		perEP[id]++
	}
	checkShares(t, []int{perEP["e000"], perEP["e001"], perEP["e002"]}, []int{1, 1, 1}, 0.15)

	// Remove e001: exactly its keys move, about a third of them.
	ins := weightedInstances(1, 1, 1)
	v.Set("web", ins[0], ins[2])
	s2 := p.pool("web", "").current()
	after := hashPicks(t, p, s2, keys)
	moved := 0
	for k, id := range before {
		if after[k] != id {
			moved++
			if id != "e001" {
				t.Fatalf("key %s moved from %s to %s though %s is still there", k, id, after[k], id)
			}
		}
		if id == "e001" && after[k] == id {
			t.Fatalf("key %s still on the removed endpoint", k)
		}
	}
	if moved != perEP["e001"] {
		t.Fatalf("%d keys moved, want exactly the %d of the removed endpoint", moved, perEP["e001"])
	}
	if share := float64(moved) / keys; share >= 0.4 {
		t.Fatalf("%.0f%% of keys moved going from 3 to 2 endpoints", share*100)
	}

	// Bring it back: the same keys return.
	v.Set("web", ins...)
	if back := hashPicks(t, p, p.pool("web", "").current(), keys); !mapsEqual(before, back) {
		t.Fatal("keys did not return to their endpoint when it came back")
	}
}

func TestHashWeighted(t *testing.T) {
	p, _, s := policyPool(t, testConfig(), PolicyHash, 1, 3)
	perEP := map[string]int{}
	for _, id := range hashPicks(t, p, s, 20000) {
		perEP[id]++
	}
	checkShares(t, []int{perEP["e000"], perEP["e001"]}, []int{1, 3}, 0.08)
}

func TestHashSkipsEjectedAndKeepsOthers(t *testing.T) {
	p, _, s := policyPool(t, testConfig(), PolicyHash, 1, 1, 1)
	before := hashPicks(t, p, s, 1000)
	s.all.eps[0].ejectedUntil.Store(time.Now().Add(time.Hour).UnixNano())
	after := hashPicks(t, p, s, 1000)
	for k, id := range before {
		if after[k] == "e000" {
			t.Fatalf("key %s picked the ejected endpoint", k)
		}
		if id != "e000" && after[k] != id {
			t.Fatalf("key %s moved off a healthy endpoint", k)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPoliciesSkip checks, for every policy, what rules an endpoint out:
// tried on this request, ejected, or at MaxRequestsPerInstance.
func TestPoliciesSkip(t *testing.T) {
	for _, pol := range allPolicies {
		t.Run(pol, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxRequestsPerInstance = 2
			p, _, s := policyPool(t, cfg, pol, 1, 2, 3)
			a, b, c := s.all.eps[0], s.all.eps[1], s.all.eps[2]
			for i := range 300 {
				key := strconv.Itoa(i)
				if e := s.pick(p, new(selection), key, []*endpoint{a, c}); e != b {
					t.Fatalf("tried a and c: picked %v, want b", id(e))
				}
				if e := s.pick(p, new(selection), key, []*endpoint{b}); e == b || e == nil {
					t.Fatalf("tried b: picked %v", id(e))
				}
			}

			c.ejectedUntil.Store(time.Now().Add(time.Hour).UnixNano())
			for i := range 300 {
				if e := s.pick(p, new(selection), strconv.Itoa(i), nil); e == c || e == nil {
					t.Fatalf("picked %v with c ejected", id(e))
				}
			}
			// An ejection that has run out no longer counts.
			c.ejectedUntil.Store(time.Now().Add(-time.Second).UnixNano())
			seen := false
			for i := range 300 {
				seen = seen || s.pick(p, new(selection), strconv.Itoa(i), nil) == c
			}
			if !seen {
				t.Fatal("endpoint never picked after its ejection ended")
			}

			b.inflight.Store(2) // at the cap
			for i := range 300 {
				if e := s.pick(p, new(selection), strconv.Itoa(i), nil); e == b || e == nil {
					t.Fatalf("picked %v with b at MaxRequestsPerInstance", id(e))
				}
			}
			// Under the cap again (and as loaded as the others, so that the
			// load-aware policies have no reason to avoid it).
			a.inflight.Store(1)
			b.inflight.Store(1)
			c.inflight.Store(1)
			seen = false
			for i := range 300 {
				seen = seen || s.pick(p, new(selection), strconv.Itoa(i), nil) == b
			}
			if !seen {
				t.Fatal("endpoint under the cap never picked")
			}
		})
	}
}

// TestPanicMode: when passive health rules every endpoint out, the proxy
// still sends traffic to the view's instances rather than failing, but it
// never re-picks an endpoint this request already tried.
func TestPanicMode(t *testing.T) {
	for _, pol := range allPolicies {
		t.Run(pol, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxRequestsPerInstance = 1
			p, _, s := policyPool(t, cfg, pol, 1, 1, 1)
			until := time.Now().Add(time.Hour).UnixNano()
			s.all.eps[0].ejectedUntil.Store(until)
			s.all.eps[1].ejectedUntil.Store(until)
			s.all.eps[2].inflight.Store(1)
			for i := range 100 {
				if s.pick(p, new(selection), strconv.Itoa(i), nil) == nil {
					t.Fatal("nothing picked with every endpoint out")
				}
			}
			if e := s.pick(p, new(selection), "k", []*endpoint{s.all.eps[0], s.all.eps[2]}); e != s.all.eps[1] {
				t.Fatalf("panic pick = %v, want the one untried endpoint", id(e))
			}
			if e := s.pick(p, new(selection), "k", s.all.eps); e != nil {
				t.Fatalf("all tried: picked %v, want nil", id(e))
			}
		})
	}
}

func TestPickEmptyPool(t *testing.T) {
	p, _, s := policyPool(t, testConfig(), PolicyRoundRobin)
	if e := s.pick(p, new(selection), "", nil); e != nil {
		t.Fatalf("empty pool picked %v", id(e))
	}
}

func TestSinglePolicyPerService(t *testing.T) {
	// Policy comes from Config.Policies, then the instances' Meta, then
	// Config.Policy; a bad Meta value falls back.
	v := newFakeView()
	meta := func(pol, key string) Instance {
		return Instance{ID: "a", Addr: "127.0.0.1:1", Weight: 1, Meta: map[string]string{"lb_policy": pol, "lb_hash_key": key}}
	}
	v.Set("byconfig", meta(PolicyHash, ""))
	v.Set("bymeta", meta(PolicyHash, "header:X-User"))
	v.Set("badmeta", meta("fastest", "bogus"))
	v.Set("plain", Instance{ID: "a", Addr: "127.0.0.1:1", Weight: 1})
	cfg := testConfig()
	cfg.Policy = PolicyRandom
	cfg.Policies = map[string]string{"byconfig": PolicyEWMA}
	p := newTestProxy(t, cfg, v)
	check := func(service string, want Policy, wantKey HashSource) {
		t.Helper()
		s := p.pool(service, "").current()
		if fmt.Sprintf("%T", s.all.policy) != fmt.Sprintf("%T", want) {
			t.Errorf("%s: policy %T, want %T", service, s.all.policy, want)
		}
		if s.hashKey != wantKey {
			t.Errorf("%s: hash key %+v, want %+v", service, s.hashKey, wantKey)
		}
	}
	check("byconfig", EWMA{}, HashSource{Kind: "ip"})
	check("bymeta", &Hash{}, HashSource{Kind: "header", Name: "X-User"})
	check("badmeta", Random{}, HashSource{Kind: "ip"})
	check("plain", Random{}, HashSource{Kind: "ip"})
}

func TestParseHashSource(t *testing.T) {
	tests := []struct {
		in      string
		want    HashSource
		wantErr bool
	}{
		{"", HashSource{Kind: "ip"}, false},
		{"ip", HashSource{Kind: "ip"}, false},
		{"header:X-User", HashSource{Kind: "header", Name: "X-User"}, false},
		{"cookie:session", HashSource{Kind: "cookie", Name: "session"}, false},
		{"cookie:a:b", HashSource{Kind: "cookie", Name: "a:b"}, false},
		{"header:", HashSource{}, true},
		{"cookie:", HashSource{}, true},
		{"header", HashSource{}, true},
		{"cookie", HashSource{}, true},
		{"ip:x", HashSource{}, true},
		{"query:id", HashSource{}, true},
		{"IP", HashSource{}, true},
		{":x", HashSource{}, true},
	}
	for _, tt := range tests {
		got, err := ParseHashSource(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseHashSource(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestValidPolicy(t *testing.T) {
	for _, pol := range allPolicies {
		if !ValidPolicy(pol) {
			t.Errorf("ValidPolicy(%q) = false", pol)
		}
	}
	for _, bad := range []string{"", "RoundRobin", "least-request", "p2c"} {
		if ValidPolicy(bad) {
			t.Errorf("ValidPolicy(%q) = true", bad)
		}
	}
}

func id(e *endpoint) string {
	if e == nil {
		return "<nil>"
	}
	return e.id
}
