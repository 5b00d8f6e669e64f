package lb

import (
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// pool is the balancing state of one service (optionally filtered by a
// tag): a snapshot of endpoints rebuilt when the view changes, and the
// endpoints themselves, which keep their state across snapshots.
type pool struct {
	service, tag string
	p            *Proxy

	snap atomic.Pointer[snapshot]

	stats poolStats // traffic counters (metrics.go)

	mu   sync.Mutex // guards refresh and byID
	byID map[string]*endpoint
}

// snapshot is an immutable picture of a pool at one view generation.
type snapshot struct {
	gen     uint64
	eps     []*endpoint
	cum     []int64
	uniform bool
	policy  Policy
	hashKey HashSource
	stats   *poolStats // the pool's counters; nil in tests' snapshots
}

func newPool(p *Proxy, service, tag string) *pool {
	return &pool{p: p, service: service, tag: tag, byID: make(map[string]*endpoint)}
}

// current returns the snapshot for the view's current generation,
// refreshing it first when the view moved on.
func (pl *pool) current() *snapshot {
	gen := pl.p.view.Generation(pl.service)
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

// build makes a snapshot from the view. Endpoints of instances still present
// keep their state; in-flight requests on removed ones finish undisturbed.
func (pl *pool) build(gen uint64) *snapshot {
	instances := pl.p.view.Instances(pl.service)
	s := &snapshot{gen: gen, uniform: true, stats: &pl.stats}
	seen := make(map[string]bool, len(instances))
	policyName, hashKey := "", ""
	for _, in := range instances {
		if pl.tag != "" && !slices.Contains(in.Tags, pl.tag) {
			continue
		}
		if seen[in.ID] || in.Addr == "" {
			continue
		}
		seen[in.ID] = true
		e := pl.byID[in.ID]
		if e == nil || e.addr != in.Addr || e.via != in.Via {
			e = newEndpoint(in, pl.p.cfg.ConnectTimeout, pl.p.cfg.Mesh)
			pl.byID[in.ID] = e
		}
		e.weight.Store(int64(max(in.Weight, 1)))
		s.eps = append(s.eps, e)
		if policyName == "" {
			policyName, hashKey = in.Meta["lb_policy"], in.Meta["lb_hash_key"]
		}
	}
	for id := range pl.byID {
		if !seen[id] {
			delete(pl.byID, id)
		}
	}
	sort.Slice(s.eps, func(i, j int) bool { return s.eps[i].id < s.eps[j].id })
	var total int64
	for _, e := range s.eps {
		total += e.weight.Load()
		s.cum = append(s.cum, total)
		if e.weight.Load() != s.eps[0].weight.Load() {
			s.uniform = false
		}
	}
	s.policy, s.hashKey = pl.p.policyFor(pl.service, policyName, hashKey, s.eps, s.uniform)
	return s
}

// pick selects an endpoint for a request, using sel as scratch space (the
// request loop's, so that picking allocates nothing). When every endpoint is
// ejected or saturated it ignores passive health rather than failing
// ("panic mode"): the view still says they are healthy.
func (s *snapshot) pick(p *Proxy, sel *selection, key string, tried []*endpoint) *endpoint {
	if len(s.eps) == 0 {
		return nil
	}
	*sel = selection{
		eps: s.eps, cum: s.cum, uniform: s.uniform, now: time.Now().UnixNano(),
		maxInflight: int64(p.cfg.MaxRequestsPerInstance), tried: tried, key: key,
	}
	if e := s.policy.Select(sel); e != nil {
		return e
	}
	for _, e := range s.eps {
		if !slices.Contains(tried, e) {
			return e
		}
	}
	return nil
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
	for _, o := range s.eps {
		if o != e && o.ejectedUntil.Load() > now.UnixNano() {
			ejected++
		}
	}
	limit := max(1, int(float64(len(s.eps))*p.cfg.MaxEjectionShare))
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
