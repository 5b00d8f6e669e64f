package lb

import (
	"fmt"
	"hash/maphash"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
)

// Policy names, as accepted in configuration and in a service's
// Meta["lb_policy"].
const (
	PolicyRoundRobin   = "round_robin"
	PolicyRandom       = "random"
	PolicyLeastRequest = "least_request"
	PolicyEWMA         = "ewma"
	PolicyHash         = "hash"
	PolicyLatency      = "latency"
)

// DefaultPolicy balances on requests in flight with the power of two
// choices: it reacts to slow or overloaded instances at once, which round
// robin does not, and costs two atomic loads.
const DefaultPolicy = PolicyLeastRequest

// Policy picks an endpoint for one request. Implementations must be safe
// for concurrent use and must not block.
type Policy interface {
	Select(s *selection) *endpoint
}

// selection is one request's view of a pool while picking: the endpoints,
// their cumulative weights, and what rules an endpoint out.
type selection struct {
	eps         []*endpoint
	cum         []int64 // cum[i] = weights of eps[0..i]
	uniform     bool    // all weights equal
	now         int64   // Unix ns
	maxInflight int64
	tried       []*endpoint
	key         string // the request's hash key (hash policy only)
	zone        string // the caller's zone (Config.Zone)
}

// usable reports whether e may take this request.
func (s *selection) usable(e *endpoint) bool {
	return e.available(s.now, s.maxInflight) && !slices.Contains(s.tried, e)
}

// randomIndex returns a random index, weighted.
func (s *selection) randomIndex() int {
	if s.uniform {
		return rand.IntN(len(s.eps))
	}
	r := rand.Int64N(s.cum[len(s.cum)-1])
	return sort.Search(len(s.cum), func(i int) bool { return s.cum[i] > r })
}

// scan returns the first usable endpoint from index start on, wrapping.
func (s *selection) scan(start int) *endpoint {
	n := len(s.eps)
	for i := range n {
		if e := s.eps[(start+i)%n]; s.usable(e) {
			return e
		}
	}
	return nil
}

// RoundRobin takes the endpoints in turn; with unequal weights it walks a
// smooth weighted schedule so that heavy endpoints are not hit in bursts.
type RoundRobin struct {
	next     atomic.Uint64
	schedule []int // indices into the snapshot's endpoints; nil when uniform
}

func newRoundRobin(eps []*endpoint, uniform bool) *RoundRobin {
	rr := &RoundRobin{}
	if !uniform {
		rr.schedule = smoothSchedule(eps)
	}
	return rr
}

// Select implements Policy.
func (p *RoundRobin) Select(s *selection) *endpoint {
	n := p.next.Add(1) - 1
	if p.schedule != nil {
		if e := s.eps[p.schedule[n%uint64(len(p.schedule))]]; s.usable(e) {
			return e
		}
	}
	return s.scan(int(n % uint64(len(s.eps))))
}

// smoothSchedule lays out nginx's smooth weighted round robin for one full
// cycle (capped at 4096 slots, scaling weights down if needed).
func smoothSchedule(eps []*endpoint) []int {
	weights := make([]int64, len(eps))
	var total int64
	for i, e := range eps {
		weights[i] = e.weight.Load()
		total += weights[i]
	}
	if total > 4096 {
		for i := range weights {
			weights[i] = max(1, weights[i]*4096/total)
		}
		total = 0
		for _, w := range weights {
			total += w
		}
	}
	current := make([]int64, len(eps))
	out := make([]int, 0, total)
	for range total {
		best := 0
		for i := range current {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		out = append(out, best)
	}
	return out
}

// Random picks an endpoint at random, weighted.
type Random struct{}

// Select implements Policy.
func (Random) Select(s *selection) *endpoint {
	i := s.randomIndex()
	if e := s.eps[i]; s.usable(e) {
		return e
	}
	return s.scan(i)
}

// LeastRequest draws two endpoints at random (weighted) and takes the one
// with fewer requests in flight per unit of weight: the power of two choices.
type LeastRequest struct{}

// Select implements Policy.
func (LeastRequest) Select(s *selection) *endpoint {
	return p2c(s, func(e *endpoint) float64 {
		return float64(e.inflight.Load()) / float64(e.weight.Load())
	})
}

// EWMA is Linkerd's peak-EWMA: the power of two choices on latency times
// load, so slow instances get less traffic before they fail outright.
type EWMA struct{}

// Select implements Policy.
func (EWMA) Select(s *selection) *endpoint {
	return p2c(s, (*endpoint).cost)
}

func p2c(s *selection, cost func(*endpoint) float64) *endpoint {
	if len(s.eps) == 1 {
		return s.scan(0)
	}
	i, j := s.randomIndex(), s.randomIndex()
	for tries := 0; j == i && tries < 4; tries++ {
		j = s.randomIndex()
	}
	a, b := s.eps[i], s.eps[j]
	okA, okB := s.usable(a), s.usable(b)
	switch {
	case okA && okB:
		if cost(b) < cost(a) {
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

// Hash sends equal keys to the same endpoint with rendezvous (highest random
// weight) hashing: when the pool changes, only the keys of the endpoints
// that came or went move. The key is a header, a cookie or the client IP.
type Hash struct {
	Source HashSource
	seed   maphash.Seed
}

// HashSource says where the hash key of a request comes from.
type HashSource struct {
	Kind string // "header", "cookie" or "ip"
	Name string // header or cookie name
}

// ParseHashSource reads "header:NAME", "cookie:NAME" or "ip" (the default).
func ParseHashSource(s string) (HashSource, error) {
	if s == "" || s == "ip" {
		return HashSource{Kind: "ip"}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" || (kind != "header" && kind != "cookie") {
		return HashSource{}, fmt.Errorf("hash key %q: want header:NAME, cookie:NAME or ip", s)
	}
	return HashSource{Kind: kind, Name: name}, nil
}

// Select implements Policy.
func (p *Hash) Select(s *selection) *endpoint {
	var best *endpoint
	bestScore := math.Inf(-1)
	for _, e := range s.eps {
		if !s.usable(e) {
			continue
		}
		// Weighted rendezvous: score = -w / ln(u), u uniform in (0,1) from
		// the hash of key and endpoint.
		h := maphash.String(p.seed, s.key+"\x00"+e.id)
		u := (float64(h>>11) + 0.5) / (1 << 53)
		score := -float64(e.weight.Load()) / math.Log(u)
		if score > bestScore {
			best, bestScore = e, score
		}
	}
	return best
}

// newPolicy builds a policy by name for a snapshot of endpoints.
func newPolicy(name string, hashKey HashSource, seed maphash.Seed, eps []*endpoint, uniform bool, zone string) (Policy, error) {
	switch name {
	case PolicyRoundRobin:
		return newRoundRobin(eps, uniform), nil
	case PolicyRandom:
		return Random{}, nil
	case PolicyLeastRequest:
		return LeastRequest{}, nil
	case PolicyEWMA:
		return EWMA{}, nil
	case PolicyHash:
		return &Hash{Source: hashKey, seed: seed}, nil
	case PolicyLatency:
		return newLatency(eps, zone), nil
	}
	return nil, fmt.Errorf("unknown policy %q: want %s", name, policyNames)
}

// policyNames lists the policies for error messages.
const policyNames = "round_robin, random, least_request, ewma, latency or hash"

// ValidPolicy reports whether name is a known policy.
func ValidPolicy(name string) bool {
	_, err := newPolicy(name, HashSource{Kind: "ip"}, maphash.MakeSeed(), nil, true, "")
	return err == nil
}

var (
	_ Policy = (*RoundRobin)(nil)
	_ Policy = Random{}
	_ Policy = LeastRequest{}
	_ Policy = EWMA{}
	_ Policy = (*Hash)(nil)
)
