package lb

import (
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// pool is the balancing state of one service, or of a subset of it (a
// resolver's subset, or the instances with a tag): a snapshot of endpoints
// rebuilt when the view or the traffic policy changes, and the endpoints
// themselves, which keep their state across snapshots.
type pool struct {
	service, subset, tag string
	p                    *Proxy

	snap atomic.Pointer[snapshot]

	stats poolStats // traffic counters (metrics.go)

	mu   sync.Mutex // guards refresh and byID
	byID map[string]*endpoint
}

// snapshot is an immutable picture of a pool at one view generation (its
// latency-policy draw table aside, which the RTT refresher replaces).
type snapshot struct {
	gen uint64
	all tier
	// local and remote split all by the caller's zone when the pool spans
	// it and others and its locality is not off (see locality.go).
	local, remote *tier
	locality      Locality
	hashKey       HashSource
	stats         *poolStats // the pool's counters; nil in tests' snapshots
}

// tier is a set of endpoints with the policy that picks among them.
type tier struct {
	eps     []*endpoint
	cum     []int64
	uniform bool
	policy  Policy
}

func newPool(p *Proxy, service, subset, tag string) *pool {
	return &pool{p: p, service: service, subset: subset, tag: tag, byID: make(map[string]*endpoint)}
}

// generation is what a snapshot is current for: the view's generation of
// the service plus the traffic policy's, both of which only grow.
func (pl *pool) generation() uint64 {
	return pl.p.view.Generation(pl.service) + pl.p.table.Load().gen
}

// current returns the snapshot for the current generation, refreshing it
// first when the view or the table moved on.
func (pl *pool) current() *snapshot {
	gen := pl.generation()
	if s := pl.snap.Load(); s != nil && s.gen == gen {
		return s
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if s := pl.snap.Load(); s != nil && s.gen == gen {
		return s
	}
	s := pl.build(gen)
	pl.snap.Store(s)
	return s
}

// member reports whether the pool takes the instance.
func (pl *pool) member(in *Instance) bool {
	if pl.tag != "" && !slices.Contains(in.Tags, pl.tag) {
		return false
	}
	return pl.subset == "" || slices.Contains(in.Subsets, pl.subset)
}

// build makes a snapshot from the view. Endpoints of instances still present
// keep their state; in-flight requests on removed ones finish undisturbed.
func (pl *pool) build(gen uint64) *snapshot {
	p := pl.p
	instances := p.view.Instances(pl.service)
	settings := p.table.Load().resolved(Target{pl.service, pl.subset})
	connectTimeout := p.cfg.ConnectTimeout
	if settings != nil && settings.ConnectTimeout > 0 {
		connectTimeout = settings.ConnectTimeout
	}
	s := &snapshot{gen: gen, stats: &pl.stats}
	seen := make(map[string]bool, len(instances))
	metaPolicy, metaHashKey := "", ""
	rtts := p.rtts.Load()
	var eps []*endpoint
	for i := range instances {
		in := &instances[i]
		if !pl.member(in) || seen[in.ID] || in.Addr == "" {
			continue
		}
		seen[in.ID] = true
		e := pl.byID[in.ID]
		if e == nil || e.addr != in.Addr || e.via != in.Via || e.connectTimeout != connectTimeout ||
			e.node != in.Node || e.zone != in.Zone {
			e = newEndpoint(*in, connectTimeout, p.cfg.Mesh)
			e.zstats = p.zoneStats(pl.service, in.Zone)
			if rtts != nil {
				e.rtt.Store(int64((*rtts)[in.Node]))
			}
			pl.byID[in.ID] = e
		}
		e.weight.Store(int64(max(in.Weight, 1)))
		eps = append(eps, e)
		if metaPolicy == "" {
			metaPolicy, metaHashKey = in.Meta["lb_policy"], in.Meta["lb_hash_key"]
		}
	}
	for id := range pl.byID {
		if !seen[id] {
			delete(pl.byID, id)
		}
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].id < eps[j].id })
	name, hashKey := p.policyName(pl.service, settings, metaPolicy, metaHashKey)
	s.hashKey = hashKey
	s.all = p.newTier(name, hashKey, eps)
	if settings != nil {
		s.locality = settings.Locality
	}
	if zone := p.cfg.Zone; zone != "" && s.locality != LocalityOff {
		var local, remote []*endpoint
		for _, e := range eps {
			if e.zone == zone {
				local = append(local, e)
			} else {
				remote = append(remote, e)
			}
		}
		if len(local) > 0 && len(remote) > 0 {
			l, r := p.newTier(name, hashKey, local), p.newTier(name, hashKey, remote)
			s.local, s.remote = &l, &r
		}
	}
	return s
}

// applyDistances hands new distances to the pool's endpoints and redraws
// the latency policy of its current snapshot.
func (pl *pool) applyDistances(rtts map[string]time.Duration) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, e := range pl.byID {
		if d, ok := rtts[e.node]; ok {
			e.rtt.Store(int64(d))
		}
	}
	if s := pl.snap.Load(); s != nil {
		for _, t := range []*tier{&s.all, s.local, s.remote} {
			if t == nil {
				continue
			}
			if l, ok := t.policy.(*Latency); ok {
				l.refresh(t.eps)
			}
		}
	}
}

// newTier prepares the policy of a set of endpoints.
func (p *Proxy) newTier(name string, hashKey HashSource, eps []*endpoint) tier {
	t := tier{eps: eps, uniform: true}
	var total int64
	for _, e := range eps {
		total += e.weight.Load()
		t.cum = append(t.cum, total)
		if e.weight.Load() != eps[0].weight.Load() {
			t.uniform = false
		}
	}
	pol, err := newPolicy(name, hashKey, p.seed, eps, t.uniform, p.cfg.Zone)
	if err != nil { // unreachable: names are validated
		pol = LeastRequest{}
	}
	t.policy = pol
	return t
}

// succeeded records a good outcome: the endpoint's failure streak ends.
// The common case costs one atomic load.
func (e *endpoint) succeeded() {
	if e.failures.Load() != 0 {
		e.failures.Store(0)
	}
}

// failed records a failure of e. After threshold consecutive failures the
// endpoint is ejected for BaseEjection × its consecutive ejections (at most
// MaxEjection), unless that would eject more than MaxEjectionShare of the
// pool (always allowing one).
func (s *snapshot) failed(p *Proxy, e *endpoint, threshold int) bool {
	if threshold <= 0 {
		return false
	}
	if e.failures.Add(1) < int64(threshold) {
		return false
	}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if until := e.ejectedUntil.Load(); until != 0 && now.UnixNano() < until {
		return false // already out
	}
	ejected := 0
	for _, o := range s.all.eps {
		if o != e && o.ejectedUntil.Load() > now.UnixNano() {
			ejected++
		}
	}
	limit := max(1, int(float64(len(s.all.eps))*p.cfg.MaxEjectionShare))
	if ejected+1 > limit {
		return false
	}
	if now.Sub(e.lastEject) > p.cfg.MaxEjection+p.cfg.BaseEjection {
		e.ejects = 0 // it behaved for long enough: start the backoff over
	}
	e.ejects++
	d := min(time.Duration(e.ejects)*p.cfg.BaseEjection, p.cfg.MaxEjection)
	e.ejectedUntil.Store(now.Add(d).UnixNano())
	e.lastEject = now
	e.failures.Store(0)
	p.metrics.ejections.Add(1)
	if s.stats != nil {
		s.stats.ejections.Add(1)
	}
	p.log.Info("endpoint ejected", "service", e.id, "addr", e.addr, "for", d)
	return true
}

// hashSeed is fixed per proxy so that hash placement is stable.
func newHashSeed() maphash.Seed { return maphash.MakeSeed() }
