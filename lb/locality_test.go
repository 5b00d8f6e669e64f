package lb

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

// zonedPool builds an unstarted proxy in zone "a" whose service "web" has
// the given number of instances in zones "a" and "b", on nodes na0, na1, …
// and nb0, …, with the given round-trip times to each zone's nodes (0:
// unknown).
func zonedPool(t testing.TB, cfg Config, locality Locality, inA, inB int, rttA, rttB time.Duration) (*Proxy, *snapshot) {
	t.Helper()
	cfg.Zone = "a"
	v := newFakeView()
	var ins []Instance
	rtts := map[string]time.Duration{}
	for zone, n := range map[string]int{"a": inA, "b": inB} {
		for i := range n {
			node := fmt.Sprintf("n%s%d", zone, i)
			ins = append(ins, Instance{ID: node + "/web", Addr: "127.0.0.1:" + strconv.Itoa(20000+len(ins)),
				Weight: 1, Node: node, Zone: zone})
			if d := map[string]time.Duration{"a": rttA, "b": rttB}[zone]; d > 0 {
				rtts[node] = d
			}
		}
	}
	v.Set("web", ins...)
	p := newTestProxy(t, cfg, v)
	p.rtts.Store(&rtts)
	if locality != LocalityAdaptive {
		p.SetTable(mustTable(t, Routing{Targets: map[Target]Resolved{{Service: "web"}: {Locality: locality}}}))
	}
	return p, p.pool("web", "").current()
}

// zoneShare picks n times and returns the share that went to zone a.
func zoneShare(t testing.TB, p *Proxy, s *snapshot, n int) float64 {
	t.Helper()
	local := 0
	for range n {
		e := s.pick(p, new(selection), "", nil)
		if e == nil {
			t.Fatal("pick returned nil")
		}
		if e.zone == "a" {
			local++
		}
	}
	return float64(local) / float64(n)
}

func setInflight(s *snapshot, zone string, n int64) {
	for _, e := range s.all.eps {
		if e.zone == zone {
			e.inflight.Store(n)
		}
	}
}

// TestAdaptiveLocality: an idle or lightly loaded local zone takes all the
// traffic; local instances whose queues outgrow the way to the other zone
// spill the excess over; ejected local instances send everything away.
func TestAdaptiveLocality(t *testing.T) {
	p, s := zonedPool(t, testConfig(), LocalityAdaptive, 2, 4, 400*time.Microsecond, 20*time.Millisecond)
	if s.local == nil || len(s.local.eps) != 2 || len(s.remote.eps) != 4 {
		t.Fatalf("tiers: %+v", s)
	}
	if share := zoneShare(t, p, s, 2000); share != 1 {
		t.Errorf("idle: %.3f local, want 1", share)
	}
	setInflight(s, "a", 5) // 6 × 1.4 ms queued locally < 21 ms away
	if share := zoneShare(t, p, s, 2000); share != 1 {
		t.Errorf("5 in flight per local instance: %.3f local, want 1", share)
	}
	setInflight(s, "a", 40) // 41 × 1.4 ms > 21 ms: the other zone answers sooner
	if share := zoneShare(t, p, s, 2000); share != 0 {
		t.Errorf("40 in flight per local instance, none remote: %.3f local, want 0", share)
	}
	setInflight(s, "a", 0)
	for _, e := range s.local.eps {
		e.ejectedUntil.Store(time.Now().Add(time.Hour).UnixNano())
	}
	if share := zoneShare(t, p, s, 2000); share != 0 {
		t.Errorf("local instances ejected: %.3f local, want 0", share)
	}
}

// TestAdaptiveLocalityLearnsLatency: measured latencies take over from the
// coordinates' estimate, and a slow local zone spills sooner.
func TestAdaptiveLocalityLearnsLatency(t *testing.T) {
	p, s := zonedPool(t, testConfig(), LocalityAdaptive, 1, 1, 0, 0)
	now := time.Now().UnixNano()
	local, remote := s.local.eps[0], s.remote.eps[0]
	// No coordinates: another zone is taken to be twice as far.
	if l, r := local.expectedLatency(now, "a"), remote.expectedLatency(now, "a"); r != 2*l {
		t.Errorf("unknown distances: local %v, remote %v, want remote twice local", l, r)
	}
	local.observeLatency(50*time.Millisecond, now)  // a slow local instance
	remote.observeLatency(10*time.Millisecond, now) // a quick remote one
	if share := zoneShare(t, p, s, 1000); share != 0 {
		t.Errorf("local 50 ms, remote 10 ms: %.3f local, want 0", share)
	}
}

func TestStrictAndOffLocality(t *testing.T) {
	p, s := zonedPool(t, testConfig(), LocalityStrict, 2, 4, 400*time.Microsecond, 20*time.Millisecond)
	setInflight(s, "a", 1000)
	if share := zoneShare(t, p, s, 1000); share != 1 {
		t.Errorf("strict, local loaded: %.3f local, want 1", share)
	}
	for _, e := range s.local.eps {
		e.ejectedUntil.Store(time.Now().Add(time.Hour).UnixNano())
	}
	if share := zoneShare(t, p, s, 1000); share != 0 {
		t.Errorf("strict, local ejected: %.3f local, want 0", share)
	}

	p, s = zonedPool(t, testConfig(), LocalityOff, 2, 4, 400*time.Microsecond, 20*time.Millisecond)
	if s.local != nil {
		t.Fatal("locality off still tiers the pool")
	}
	if share := zoneShare(t, p, s, 6000); share < 0.28 || share > 0.39 {
		t.Errorf("locality off: %.3f local, want about a third", share)
	}

	// Without a zone of its own the proxy does not tier either.
	cfg := testConfig()
	v := newFakeView()
	v.Set("web", Instance{ID: "x", Addr: "127.0.0.1:1", Weight: 1, Zone: "a"}, Instance{ID: "y", Addr: "127.0.0.1:2", Weight: 1, Zone: "b"})
	if s := newTestProxy(t, cfg, v).pool("web", "").current(); s.local != nil {
		t.Error("a proxy without a zone tiers its pools")
	}
}

// TestLocalityWithoutLoadSignal: round robin in a zone is strict.
func TestLocalityWithoutLoadSignal(t *testing.T) {
	cfg := testConfig()
	cfg.Policy = PolicyRoundRobin
	p, s := zonedPool(t, cfg, LocalityAdaptive, 2, 2, 400*time.Microsecond, 20*time.Millisecond)
	setInflight(s, "a", 1000)
	if share := zoneShare(t, p, s, 1000); share != 1 {
		t.Errorf("round robin, adaptive: %.3f local, want 1", share)
	}
}

// TestLatencyPolicy: near instances get nearly all of the traffic of an
// idle caller, before any has answered, and lose most of it as they queue
// up (all but what goes to them when both candidates are near).
func TestLatencyPolicy(t *testing.T) {
	cfg := testConfig()
	cfg.Policy = PolicyLatency
	p, s := zonedPool(t, cfg, LocalityOff, 2, 4, 400*time.Microsecond, 20*time.Millisecond)
	if share := zoneShare(t, p, s, 4000); share < 0.99 {
		t.Errorf("idle: %.3f to the near instances, want at least 0.99", share)
	}
	setInflight(s, "a", 100)
	if share := zoneShare(t, p, s, 4000); share > 0.45 {
		t.Errorf("near instances loaded: %.3f to them, want at most a third or so", share)
	}
	// No distances and no zone: the power of two choices on load alone.
	cfg.Zone = ""
	v := newFakeView()
	v.Set("web", weightedInstances(1, 1, 1)...)
	p = newTestProxy(t, cfg, v)
	checkShares(t, counts(t, p, p.pool("web", "").current(), 6000), uniform(3), 0.15)
}

// TestLatencyPolicyLearns: the draw follows what answers take, so that an
// estimate from coordinates that is off (a near node taken for 2.5 ms away
// when it answers in 0.5 ms) costs far draws only until the answers come.
func TestLatencyPolicyLearns(t *testing.T) {
	cfg := testConfig()
	cfg.Policy = PolicyLatency
	p, s := zonedPool(t, cfg, LocalityOff, 1, 2, 2500*time.Microsecond, 12*time.Millisecond)
	before := zoneShare(t, p, s, 6000)
	now := time.Now().UnixNano()
	for _, e := range s.all.eps {
		if e.zone == "a" {
			e.observeLatency(500*time.Microsecond, now)
		} else {
			e.observeLatency(12*time.Millisecond, now)
		}
	}
	s.all.policy.(*Latency).refresh(s.all.eps)
	after := zoneShare(t, p, s, 6000)
	if after < 0.98 || after <= before {
		t.Errorf("near share %.3f from coordinates, %.3f once answers came: want the latter at least 0.98 and higher", before, after)
	}
}

// TestLatencyPolicyShrugsOffAStall: one slow answer among a second of
// fast ones (a core busy on either side) leaves the near instance near;
// answers that stay slow move it away.
func TestLatencyPolicyShrugsOffAStall(t *testing.T) {
	cfg := testConfig()
	cfg.Policy = PolicyLatency
	p, s := zonedPool(t, cfg, LocalityOff, 1, 2, 2500*time.Microsecond, 12*time.Millisecond)
	// 100 answers a second, on a clock that reaches the present at the
	// last of the 401 answers below.
	const every = int64(10 * time.Millisecond)
	now := time.Now().UnixNano() - 401*every
	answer := func(near time.Duration, n int) {
		for range n {
			now += every
			for _, e := range s.all.eps {
				if e.zone == "a" {
					e.observeLatency(near, now)
				} else {
					e.observeLatency(12*time.Millisecond, now)
				}
			}
		}
		s.all.policy.(*Latency).refresh(s.all.eps)
	}
	answer(500*time.Microsecond, 100)
	answer(25*time.Millisecond, 1)
	if got := zoneShare(t, p, s, 6000); got < 0.98 {
		t.Errorf("near share %.3f right after one 25 ms answer among fast ones, want at least 0.98", got)
	}
	answer(25*time.Millisecond, 300)
	if got := zoneShare(t, p, s, 6000); got > 0.5 {
		t.Errorf("near share %.3f after 3 s of 25 ms answers (the others answer in 12 ms), want at most 0.5", got)
	}
}

// fakeDistances serves a fixed table of round-trip times.
type fakeDistances struct {
	mu   sync.Mutex
	rtts map[string]time.Duration
}

func (d *fakeDistances) RTTs() map[string]time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]time.Duration, len(d.rtts))
	for k, v := range d.rtts {
		out[k] = v
	}
	return out
}

func (d *fakeDistances) set(node string, rtt time.Duration) {
	d.mu.Lock()
	d.rtts[node] = rtt
	d.mu.Unlock()
}

// TestDistancesRefresh: distances reach the endpoints and the latency
// policy's draw table while the proxy runs.
func TestDistancesRefresh(t *testing.T) {
	d := &fakeDistances{rtts: map[string]time.Duration{"near": time.Millisecond, "far": time.Millisecond}}
	cfg := testConfig()
	cfg.Policy = PolicyLatency
	cfg.Distances = d
	cfg.DistanceRefresh = 10 * time.Millisecond
	v := newFakeView()
	v.Set("web", Instance{ID: "near", Addr: "127.0.0.1:1", Weight: 1, Node: "near"},
		Instance{ID: "far", Addr: "127.0.0.1:2", Weight: 1, Node: "far"})
	p := startProxy(t, cfg, v)
	s := p.ensurePool("web", "", "").current()
	d.set("far", 50*time.Millisecond)
	waitFor(t, 5*time.Second, "the new distance on the endpoint", func() bool {
		for _, e := range s.all.eps {
			if e.id == "far" && e.rtt.Load() == int64(50*time.Millisecond) {
				return true
			}
		}
		return false
	})
	near := 0
	for range 2000 {
		if s.pick(p, new(selection), "", nil).id == "near" {
			near++
		}
	}
	if near < 1900 {
		t.Errorf("%d of 2000 picks to the near instance, want nearly all", near)
	}
}
