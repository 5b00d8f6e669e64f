package lb

import (
	"math"
	"slices"
	"time"
)

// Locality: zones and distances.
//
// Every agent may name its zone (Config.Zone); every instance carries the
// zone of its node (Instance.Zone). When a pool has instances both in the
// caller's zone and elsewhere, its snapshot holds the two tiers apart and
// pick chooses by the target's Locality:
//
//   - strict: the local tier while any of it may take the request, then
//     the rest;
//   - adaptive (the default): the policy picks its best local instance and
//     its best remote one, and the request goes where it is expected to be
//     answered sooner. An instance's expected latency is its round-trip
//     time, as learnt from its answers (peak-EWMA) or, until it has
//     answered, estimated from the two nodes' network coordinates, times
//     its requests in flight plus this one. Local instances keep the
//     traffic while their queues are shorter than the way to another zone
//     is long; when they slow down, queue up, fail or are ejected, the
//     excess spills over, and comes back as they recover. A zone that is
//     down has no instance in the view and gets nothing. Policies without
//     a load signal (round_robin, random, hash) are strict.
//
// Distances come from Config.Distances, refreshed off the request path.

// nominalService is the service time assumed of an instance that has not
// answered yet, added to its round-trip estimate.
const nominalService = time.Millisecond

// expectedLatency estimates, in nanoseconds, how long a request to e takes
// to be answered when nothing is queued there: the typical latency of its
// answers, drifting back to the estimate from coordinates while it gets no
// traffic (so that slow answers long ago do not bar it forever). Unknown
// distances to another zone count double.
//
// The typical latency, not the peak-EWMA the ewma policy uses: it weighs
// a lone stall (a core busy on either side) as one answer among many, so
// that one slow answer does not make a near instance look far for the ten
// seconds a peak takes to decay, while answers that stay slow move it
// within a second or so at a hundred a second. Requests in flight, which
// expectedWait multiplies in, react at once.
func (e *endpoint) expectedLatency(now int64, localZone string) float64 {
	prior := float64(e.rtt.Load()) + float64(nominalService)
	if e.rtt.Load() == 0 && localZone != "" && e.zone != localZone {
		prior *= 2
	}
	typical := math.Float64frombits(e.typical.Load())
	if typical == 0 {
		return prior
	}
	age := float64(now - e.stamp.Load())
	return prior + (typical-prior)*math.Exp(-age/ewmaDecay)
}

// expectedWait is expectedLatency scaled by the requests e already holds
// (this one included) per unit of weight: the cost adaptive locality and
// the latency policy minimize.
func (e *endpoint) expectedWait(now int64, localZone string) float64 {
	return float64(e.inflight.Load()+1) / float64(e.weight.Load()) * e.expectedLatency(now, localZone)
}

// loadAware reports whether a policy weighs load, so that adaptive
// locality may compare its picks.
func loadAware(p Policy) bool {
	switch p.(type) {
	case LeastRequest, EWMA, *Latency:
		return true
	}
	return false
}

// pick selects an endpoint for a request, using sel as scratch space (the
// request loop's, so that picking allocates nothing). When every endpoint is
// ejected or saturated it ignores passive health rather than failing
// ("panic mode"): the view still says they are healthy.
func (s *snapshot) pick(p *Proxy, sel *selection, key string, tried []*endpoint) *endpoint {
	if len(s.all.eps) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	if s.local != nil {
		local := s.local.selectFrom(p, sel, key, tried, now)
		switch {
		case local == nil:
			// Nothing local may take it: on to the other zones.
		case s.locality == LocalityStrict || !loadAware(s.local.policy):
			return local
		default:
			remote := s.remote.selectFrom(p, sel, key, tried, now)
			if remote != nil && remote.expectedWait(now, p.cfg.Zone) < local.expectedWait(now, p.cfg.Zone) {
				return remote
			}
			return local
		}
	}
	if e := s.all.selectFrom(p, sel, key, tried, now); e != nil {
		return e
	}
	for _, e := range s.all.eps {
		if !slices.Contains(tried, e) {
			return e
		}
	}
	return nil
}

// selectFrom runs the tier's policy.
func (t *tier) selectFrom(p *Proxy, sel *selection, key string, tried []*endpoint, now int64) *endpoint {
	if len(t.eps) == 0 {
		return nil
	}
	*sel = selection{
		eps: t.eps, cum: t.cum, uniform: t.uniform, now: now, zone: p.cfg.Zone,
		maxInflight: int64(p.cfg.MaxRequestsPerInstance), tried: tried, key: key,
	}
	return t.policy.Select(sel)
}

// Latency is the power of two choices weighted by distance. The first
// candidate is drawn with a probability proportional to weight over the
// square of its expected latency (what its answers typically take, or
// before it has answered the round-trip estimate from network coordinates
// plus a nominal service time), so that near instances are drawn far more often
// (about 200 times as often at 1 ms as at 15 ms), the second in proportion
// to weight alone; the one with the shorter expected wait (expected
// latency times requests in flight) takes the request. An idle caller thus
// sends nearly everything to its nearest instances before any of them has
// answered, and as they queue up the second candidate, drawn from all,
// takes the excess: near first, without piling onto them.
type Latency struct {
	// draw is the first candidate's cumulative draw table, rebuilt when
	// distances are refreshed.
	draw atomicSlice
	zone string // the caller's, for expectedLatency
}

// newLatency prepares the policy for eps, the caller being in zone.
func newLatency(eps []*endpoint, zone string) *Latency {
	l := &Latency{zone: zone}
	l.refresh(eps)
	return l
}

// refresh rebuilds the draw table from the endpoints' expected latencies
// as of now.
func (l *Latency) refresh(eps []*endpoint) {
	now := time.Now().UnixNano()
	cum := make([]float64, len(eps))
	total := 0.0
	for i, e := range eps {
		lat := e.expectedLatency(now, l.zone) / float64(time.Millisecond)
		total += float64(e.weight.Load()) / (lat * lat)
		cum[i] = total
	}
	l.draw.store(cum)
}

// Select implements Policy.
func (l *Latency) Select(s *selection) *endpoint {
	cum := l.draw.load()
	if len(cum) != len(s.eps) || len(s.eps) == 1 {
		return p2c(s, func(e *endpoint) float64 { return e.expectedWait(s.now, s.zone) })
	}
	i, _ := slices.BinarySearch(cum, randFloat()*cum[len(cum)-1])
	i = min(i, len(cum)-1)
	j := s.randomIndex()
	for tries := 0; j == i && tries < 4; tries++ {
		j = s.randomIndex()
	}
	a, b := s.eps[i], s.eps[j]
	okA, okB := s.usable(a), s.usable(b)
	switch {
	case okA && okB:
		if b.expectedWait(s.now, s.zone) < a.expectedWait(s.now, s.zone) {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	return s.scan(i)
}

var _ Policy = (*Latency)(nil)
