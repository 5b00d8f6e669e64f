package lb

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Traffic policy. A request for a service goes through that service's
// chain before an instance is picked, as Consul's discovery chain does:
//
//	router   the first route whose match holds (HTTP only) says where the
//	         request goes and how: timeout, retries, rewrites, headers;
//	splitter the destination is split by weight over targets;
//	resolver a target is a service or one of its subsets, with its own
//	         balancing policy, timeouts, locality and failover.
//
// The agent compiles its config entries into a Routing, NewTable checks and
// compiles that into an immutable Table, and SetTable swaps it in whole: the
// request path reads it with one atomic load and map lookups, never a lock.

// Routing is the declarative traffic policy that NewTable compiles.
type Routing struct {
	// Chains holds the chain of each service name that has one; a name
	// without a chain goes straight to its whole service.
	Chains map[string]Chain
	// Targets holds the settings of every target a chain or a failover
	// can end at, and of any service whose resolver sets something.
	Targets map[Target]Resolved
	// Protocols holds the declared protocol of services (tcp, http, http2,
	// grpc): the TCP upstream listeners of a service whose protocol is
	// HTTP's serve HTTP, so that its routes apply there too.
	Protocols map[string]string
}

// Target is a service, or a named subset of its instances (Instance.Subsets).
type Target struct {
	Service string
	Subset  string // "": every instance of the service
}

// String returns "service" or "service/subset".
func (t Target) String() string {
	if t.Subset == "" {
		return t.Service
	}
	return t.Service + "/" + t.Subset
}

// Resolved holds what a service's resolver says of one of its targets.
// Zero values leave the proxy's defaults.
type Resolved struct {
	// ConnectTimeout bounds a connect to an instance of the target.
	ConnectTimeout time.Duration
	// RequestTimeout bounds a whole request to the target, retries
	// included, unless its route sets one.
	RequestTimeout time.Duration
	// Policy is the balancing policy; "" keeps the service's or default.
	Policy string
	// HashKey is the hash policy's key source ("ip", "header:NAME",
	// "cookie:NAME"); "" keeps the default.
	HashKey string
	// Locality says how the caller's zone weighs in (see Locality).
	Locality Locality
	// Failover lists where requests go, in order, while the target has no
	// instance that may take traffic.
	Failover []Target
}

// Locality is how a target's instances are tiered by zone.
type Locality string

// Locality modes.
const (
	// LocalityAdaptive (the default) prefers instances in the caller's
	// zone and spills over to other zones when they are expected to answer
	// sooner: the local ones are ejected, down, or queueing requests for
	// longer than the way to another zone takes (see locality.go).
	LocalityAdaptive Locality = ""
	// LocalityStrict keeps traffic in the caller's zone while any instance
	// there may take it, and uses other zones only when none can.
	LocalityStrict Locality = "strict"
	// LocalityOff ignores zones.
	LocalityOff Locality = "off"
)

// Chain is what requests for one service name go through.
type Chain struct {
	// Routes are tried in order, on HTTP requests only; the first whose
	// match holds decides.
	Routes []Route
	// Default is where requests that match no route, and TCP connections,
	// go: the service's splitter, or one leg of weight 100.
	Default []Split
}

// Route is one route of a service-router.
type Route struct {
	Match RouteMatch
	// Splits is where matching requests go, by weight.
	Splits []Split
	// PrefixRewrite replaces the matched PathPrefix (or the whole path of a
	// PathExact match) before the request goes on, as Envoy does: no slash
	// is added or removed.
	PrefixRewrite string
	// RequestTimeout bounds the whole request, retries included; 0: the
	// target's, else the proxy's.
	RequestTimeout time.Duration
	// Retry replaces the proxy's retry rules for the route; nil keeps them.
	Retry *RetryPolicy
	// RequestHeaders change the request before it goes on, ResponseHeaders
	// the answer before it goes back.
	RequestHeaders, ResponseHeaders HeaderOps
}

// RouteMatch says which requests a route takes; every field set must hold.
// The zero value matches every request.
type RouteMatch struct {
	// At most one of the three path matches is set. Paths are matched as
	// the client sent them (no decoding, no normalization), without the
	// query string.
	PathExact, PathPrefix string
	PathRegex             *regexp.Regexp
	// CaseInsensitive makes PathExact and PathPrefix ignore case.
	CaseInsensitive bool
	// Methods, when set, lists the methods matched (upper case).
	Methods []string
	Headers []HeaderMatch
	Query   []QueryMatch
}

// HeaderMatch matches a request header. Exactly one of Present, Exact,
// Prefix, Suffix and Regex is set; Invert negates the outcome.
type HeaderMatch struct {
	Name                  string
	Present               bool
	Exact, Prefix, Suffix string
	Regex                 *regexp.Regexp
	Invert                bool
}

// QueryMatch matches a query parameter. Exactly one of Present, Exact and
// Regex is set.
type QueryMatch struct {
	Name    string
	Present bool
	Exact   string
	Regex   *regexp.Regexp
}

// RetryPolicy is a route's retry rules. Failed connects are always retried
// elsewhere (nothing was sent), within NumRetries.
type RetryPolicy struct {
	// NumRetries is how many more instances a request may be tried on.
	NumRetries int
	// OnReset retries requests whose connection broke or timed out before
	// the answer, even when not idempotent.
	OnReset bool
	// OnStatus lists the answers that are retried on another instance.
	OnStatus []int
}

// HeaderOps changes headers: Add appends a value, Set replaces every value,
// Remove deletes.
type HeaderOps struct {
	Add, Set map[string]string
	Remove   []string
}

// Split is one leg of a splitter.
type Split struct {
	// Weight is the leg's share in percent, 0 to 100, to 0.01.
	Weight float64
	Target Target
	// RequestHeaders and ResponseHeaders apply to the leg's requests,
	// after the route's.
	RequestHeaders, ResponseHeaders HeaderOps
}

// Table is a compiled, immutable Routing. The zero Table routes every
// request straight to its service.
type Table struct {
	chains  map[string]*chain
	targets map[Target]*target
	http    map[string]bool // services whose upstream listeners speak HTTP
	// gen moves at every SetTable, so that pools pick up new settings.
	gen uint64
}

// chain is a compiled Chain.
type chain struct {
	service string
	routes  []*rule
	def     *rule // no match; its stats are the "default" route's
}

// rule is a compiled Route (or a chain's default).
type rule struct {
	name       string // "0", "1", … or "default", for metrics
	match      RouteMatch
	legs       []leg
	cum        []uint32 // cum[i]: basis points of legs[0..i]
	rewrite    string
	hasRewrite bool
	timeout    time.Duration
	retry      *retryRules
	reqOps     *headerOps
	respOps    *headerOps
	stats      *decisionStats
}

// leg is a compiled Split.
type leg struct {
	target  *target
	reqOps  *headerOps
	respOps *headerOps
}

// target is a compiled Target with its resolved settings.
type target struct {
	Target
	Resolved
	failover []*target
}

// retryRules is a compiled RetryPolicy.
type retryRules struct {
	max     int
	onReset bool
	status  [8]uint64 // bit per status 100-599 (see has)
}

func (r *retryRules) has(status int) bool {
	if r == nil || status < 100 || status > 599 {
		return false
	}
	i := status - 100
	return r.status[i/64]&(1<<(i%64)) != 0
}

// headerOps is a compiled HeaderOps; nil when empty.
type headerOps struct {
	add, set [][2]string
	remove   []string
}

// maxFailover bounds failover lists, so that a lookup stays cheap.
const maxFailover = 8

// NewTable checks r and compiles it. Every target a chain or failover names
// must be in r.Targets or be a whole service (Subset ""); weights of each
// splitter must add up to 100.
func NewTable(r Routing) (*Table, error) {
	t := &Table{chains: make(map[string]*chain, len(r.Chains)), targets: make(map[Target]*target), http: map[string]bool{}}
	var errs []error
	for service, proto := range r.Protocols {
		switch proto {
		case "http", "http2", "grpc":
			t.http[service] = true
		case "", "tcp":
		default:
			errs = append(errs, fmt.Errorf("service %s: unknown protocol %q", service, proto))
		}
	}
	get := func(k Target) *target {
		if tg := t.targets[k]; tg != nil {
			return tg
		}
		tg := &target{Target: k}
		if res, ok := r.Targets[k]; ok {
			tg.Resolved = res
		} else if res, ok := r.Targets[Target{Service: k.Service}]; ok && k.Subset != "" {
			// A subset shares its service's settings but not its failover.
			tg.Resolved = res
			tg.Failover = nil
		}
		t.targets[k] = tg
		return tg
	}
	keys := make([]Target, 0, len(r.Targets))
	for k := range r.Targets {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		if k.Service == "" {
			errs = append(errs, errors.New("a target without a service"))
			continue
		}
		res := r.Targets[k]
		if res.Policy != "" && !ValidPolicy(res.Policy) {
			errs = append(errs, fmt.Errorf("target %s: unknown policy %q", k, res.Policy))
		}
		if res.HashKey != "" {
			if _, err := ParseHashSource(res.HashKey); err != nil {
				errs = append(errs, fmt.Errorf("target %s: %w", k, err))
			}
		}
		switch res.Locality {
		case LocalityAdaptive, LocalityStrict, LocalityOff:
		default:
			errs = append(errs, fmt.Errorf("target %s: unknown locality %q", k, res.Locality))
		}
		if res.ConnectTimeout < 0 || res.RequestTimeout < 0 {
			errs = append(errs, fmt.Errorf("target %s: negative timeout", k))
		}
		if len(res.Failover) > maxFailover {
			errs = append(errs, fmt.Errorf("target %s: %d failover targets, at most %d", k, len(res.Failover), maxFailover))
		}
		get(k)
	}
	// Failover lists point at other targets; a failover target's own
	// failover is not followed (Consul does not chain them either).
	for _, k := range keys {
		tg := t.targets[k]
		for _, f := range r.Targets[k].Failover {
			if f.Service == "" || f == k {
				errs = append(errs, fmt.Errorf("target %s: failover to %q", k, f))
				continue
			}
			tg.failover = append(tg.failover, get(f))
		}
	}
	names := make([]string, 0, len(r.Chains))
	for name := range r.Chains {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c, err := compileChain(name, r.Chains[name], get)
		if err != nil {
			errs = append(errs, fmt.Errorf("chain of %s: %w", name, err))
			continue
		}
		t.chains[name] = c
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

func compileChain(name string, c Chain, get func(Target) *target) (*chain, error) {
	out := &chain{service: name}
	var errs []error
	for i, r := range c.Routes {
		cr, err := compileRoute(strconv.Itoa(i), r, get)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %d: %w", i, err))
			continue
		}
		out.routes = append(out.routes, cr)
	}
	def := c.Default
	if len(def) == 0 {
		def = []Split{{Weight: 100, Target: Target{Service: name}}}
	}
	d, err := compileRoute("default", Route{Splits: def}, get)
	if err != nil {
		errs = append(errs, fmt.Errorf("default: %w", err))
	}
	out.def = d
	return out, errors.Join(errs...)
}

func compileRoute(name string, r Route, get func(Target) *target) (*rule, error) {
	var errs []error
	if err := checkMatch(r.Match); err != nil {
		errs = append(errs, err)
	}
	if r.PrefixRewrite != "" && r.Match.PathPrefix == "" && r.Match.PathExact == "" {
		errs = append(errs, errors.New("PrefixRewrite needs a PathPrefix or PathExact match"))
	}
	if r.RequestTimeout < 0 {
		errs = append(errs, errors.New("negative RequestTimeout"))
	}
	out := &rule{
		name: name, match: r.Match, rewrite: r.PrefixRewrite, hasRewrite: r.PrefixRewrite != "",
		timeout: r.RequestTimeout, reqOps: compileOps(r.RequestHeaders), respOps: compileOps(r.ResponseHeaders),
	}
	if r.Retry != nil {
		rr := &retryRules{max: r.Retry.NumRetries, onReset: r.Retry.OnReset}
		if rr.max < 0 {
			errs = append(errs, errors.New("negative NumRetries"))
		}
		for _, s := range r.Retry.OnStatus {
			if s < 100 || s > 599 {
				errs = append(errs, fmt.Errorf("retry on status %d: want 100-599", s))
				continue
			}
			i := s - 100
			rr.status[i/64] |= 1 << (i % 64)
		}
		out.retry = rr
	}
	if len(r.Splits) == 0 {
		errs = append(errs, errors.New("no destination"))
	}
	var total uint32
	for i, s := range r.Splits {
		if s.Target.Service == "" {
			errs = append(errs, fmt.Errorf("split %d: no service", i))
			continue
		}
		if math.IsNaN(s.Weight) || s.Weight < 0 || s.Weight > 100 {
			errs = append(errs, fmt.Errorf("split %d: weight %v: want 0-100", i, s.Weight))
			continue
		}
		total += uint32(math.Round(s.Weight * 100))
		out.legs = append(out.legs, leg{target: get(s.Target), reqOps: compileOps(s.RequestHeaders), respOps: compileOps(s.ResponseHeaders)})
		out.cum = append(out.cum, total)
	}
	if len(errs) == 0 && total != 10000 {
		errs = append(errs, fmt.Errorf("split weights add up to %.2f, want 100", float64(total)/100))
	}
	return out, errors.Join(errs...)
}

func checkMatch(m RouteMatch) error {
	paths := 0
	for _, set := range []bool{m.PathExact != "", m.PathPrefix != "", m.PathRegex != nil} {
		if set {
			paths++
		}
	}
	var errs []error
	if paths > 1 {
		errs = append(errs, errors.New("at most one of PathExact, PathPrefix and PathRegex"))
	}
	for _, p := range []string{m.PathExact, m.PathPrefix} {
		if p != "" && !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("path %q must begin with /", p))
		}
	}
	for _, h := range m.Headers {
		n := 0
		for _, set := range []bool{h.Present, h.Exact != "", h.Prefix != "", h.Suffix != "", h.Regex != nil} {
			if set {
				n++
			}
		}
		if h.Name == "" || n != 1 {
			errs = append(errs, fmt.Errorf("header match %q: want a name and one of Present, Exact, Prefix, Suffix, Regex", h.Name))
		}
	}
	for _, q := range m.Query {
		n := 0
		for _, set := range []bool{q.Present, q.Exact != "", q.Regex != nil} {
			if set {
				n++
			}
		}
		if q.Name == "" || n != 1 {
			errs = append(errs, fmt.Errorf("query match %q: want a name and one of Present, Exact, Regex", q.Name))
		}
	}
	return errors.Join(errs...)
}

func compileOps(h HeaderOps) *headerOps {
	if len(h.Add) == 0 && len(h.Set) == 0 && len(h.Remove) == 0 {
		return nil
	}
	o := &headerOps{remove: slices.Clone(h.Remove)}
	for _, k := range sortedKeys(h.Add) {
		o.add = append(o.add, [2]string{k, h.Add[k]})
	}
	for _, k := range sortedKeys(h.Set) {
		o.set = append(o.set, [2]string{k, h.Set[k]})
	}
	return o
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// chainOf returns the chain of a service name, or nil.
func (t *Table) chainOf(service string) *chain {
	if t == nil {
		return nil
	}
	return t.chains[service]
}

// speaksHTTP reports whether the upstream listeners of service serve HTTP.
func (t *Table) speaksHTTP(service string) bool {
	return t != nil && t.http[service]
}

// resolved returns the settings of a target: its own, else its service's.
func (t *Table) resolved(k Target) *target {
	if t == nil {
		return nil
	}
	if tg := t.targets[k]; tg != nil {
		return tg
	}
	return t.targets[Target{Service: k.Service}]
}

// pick chooses a leg of the route by weight.
func (r *rule) pick() *leg {
	if len(r.legs) == 1 {
		return &r.legs[0]
	}
	n := uint32(rand.IntN(10000))
	i := sort.Search(len(r.cum), func(i int) bool { return r.cum[i] > n })
	if i == len(r.legs) { // unreachable: the weights add up to 100
		i--
	}
	return &r.legs[i]
}
