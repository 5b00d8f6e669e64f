package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
)

// The discovery chain: how the traffic entries of the config store become
// the proxy's table (lb.Routing), as Consul compiles its chain for Envoy.
//
// A request for service S goes through S's service-router (HTTP only; the
// first route that matches), then the splitter of the destination the route
// names (S by default), then the resolver of each service a split names:
// its redirect, its default subset, and, for the target that results, its
// timeouts, balancing policy, locality and failover. Splitters nest (a split
// to another service with a splitter of its own is flattened), redirects
// chain; loops are errors. service-defaults contributes the balancing
// policy of services whose resolver sets none.

// entrySet is the decoded traffic entries, by service name.
type entrySet struct {
	defaults  map[string]*serviceDefaults
	resolvers map[string]*serviceResolver
	splitters map[string]*serviceSplitter
	routers   map[string]*serviceRouter
}

// loadEntrySet decodes the stored entries of the traffic kinds. An entry
// that does not decode (from an agent of another version, say) is skipped.
func loadEntrySet(entries []gossip.Entry) *entrySet {
	s := &entrySet{
		defaults: map[string]*serviceDefaults{}, resolvers: map[string]*serviceResolver{},
		splitters: map[string]*serviceSplitter{}, routers: map[string]*serviceRouter{},
	}
	for _, e := range entries {
		if e.Deleted {
			continue
		}
		var v configEntry
		switch e.Kind {
		case kindServiceDefaults:
			v = new(serviceDefaults)
		case kindServiceResolver:
			v = new(serviceResolver)
		case kindServiceSplitter:
			v = new(serviceSplitter)
		case kindServiceRouter:
			v = new(serviceRouter)
		default:
			continue
		}
		if json.Unmarshal(e.Body, v) != nil {
			continue
		}
		s.put(v)
	}
	return s
}

// put adds or replaces an entry of a traffic kind; other kinds are ignored.
func (s *entrySet) put(v configEntry) {
	switch e := v.(type) {
	case *serviceDefaults:
		s.defaults[e.Name] = e
	case *serviceResolver:
		s.resolvers[e.Name] = e
	case *serviceSplitter:
		s.splitters[e.Name] = e
	case *serviceRouter:
		s.routers[e.Name] = e
	}
}

// remove drops an entry.
func (s *entrySet) remove(kind, name string) {
	switch kind {
	case kindServiceDefaults:
		delete(s.defaults, name)
	case kindServiceResolver:
		delete(s.resolvers, name)
	case kindServiceSplitter:
		delete(s.splitters, name)
	case kindServiceRouter:
		delete(s.routers, name)
	}
}

// clone copies the maps (the entries are shared, never modified).
func (s *entrySet) clone() *entrySet {
	c := *s
	c.defaults = maps.Clone(s.defaults)
	c.resolvers = maps.Clone(s.resolvers)
	c.splitters = maps.Clone(s.splitters)
	c.routers = maps.Clone(s.routers)
	return &c
}

// chained returns the services that have a chain: a router, a splitter or
// a resolver.
func (s *entrySet) chained() []string {
	seen := map[string]bool{}
	for _, m := range []map[string]bool{keysOf(s.resolvers), keysOf(s.splitters), keysOf(s.routers)} {
		for k := range m {
			seen[k] = true
		}
	}
	return sortedKeys(seen)
}

func keysOf[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// subsetFilterOf parses a subset's filter; an empty one takes every
// instance (a nil *filter matches everything).
func subsetFilterOf(expr string) (*filter, error) {
	if expr == "" {
		return nil, nil
	}
	return newFilter(expr, ServiceEntry{})
}

// subsetFilter is a compiled resolver subset.
type subsetFilter struct {
	name        string
	filter      *filter
	onlyPassing bool
}

// trafficPolicy is the compiled traffic policy: the proxy's routing, the
// subsets each service's instances are sorted into, and the chains that
// did not compile (which route straight to their service).
type trafficPolicy struct {
	routing lb.Routing
	subsets map[string][]subsetFilter
	errors  map[string]error
}

// compileTraffic compiles every chain of s. A chain that fails is left
// out with its error; the others stand.
func compileTraffic(s *entrySet) *trafficPolicy {
	tp := &trafficPolicy{
		routing: lb.Routing{Chains: map[string]lb.Chain{}, Targets: map[lb.Target]lb.Resolved{}},
		subsets: map[string][]subsetFilter{},
		errors:  map[string]error{},
	}
	for name, r := range s.resolvers {
		for _, sub := range sortedKeys(r.Subsets) {
			f, err := subsetFilterOf(r.Subsets[sub].Filter)
			if err != nil { // validated on write; an entry from elsewhere may differ
				tp.errors[name] = fmt.Errorf("service-resolver %s: subset %s: %v", name, sub, err)
				continue
			}
			tp.subsets[name] = append(tp.subsets[name], subsetFilter{name: sub, filter: f, onlyPassing: r.Subsets[sub].OnlyPassing})
		}
	}
	for _, service := range s.chained() {
		cc := &chainCompiler{set: s, targets: map[lb.Target]lb.Resolved{}}
		ch, err := cc.chain(service)
		if err == nil {
			// Check it as the proxy will, so that one bad chain never
			// takes the others down with it.
			_, err = lb.NewTable(lb.Routing{Chains: map[string]lb.Chain{service: ch}, Targets: cc.targets})
		}
		if err != nil {
			tp.errors[service] = err
			continue
		}
		tp.routing.Chains[service] = ch
		for k, v := range cc.targets {
			tp.routing.Targets[k] = v
		}
	}
	tp.routing.Protocols = map[string]string{}
	// Services with service-defaults alone still get their policy; the
	// protocol tells upstream listeners whether to speak HTTP.
	for name, d := range s.defaults {
		if d.Protocol != "" {
			tp.routing.Protocols[name] = d.Protocol
		}
		k := lb.Target{Service: name}
		if _, ok := tp.routing.Targets[k]; !ok {
			res := (&chainCompiler{set: s}).resolved(k)
			if res.Policy != "" {
				tp.routing.Targets[k] = res
			}
		}
	}
	return tp
}

// maxChainDepth bounds nested splitters and redirect chains.
const maxChainDepth = 8

// chainCompiler compiles one service's chain, collecting the targets it
// reaches.
type chainCompiler struct {
	set     *entrySet
	targets map[lb.Target]lb.Resolved
}

func (cc *chainCompiler) chain(service string) (lb.Chain, error) {
	var ch lb.Chain
	var errs []error
	if r := cc.set.routers[service]; r != nil {
		for i, rt := range r.Routes {
			route, err := cc.route(service, rt)
			if err != nil {
				errs = append(errs, fmt.Errorf("service-router %s: Routes[%d]: %w", service, i, err))
				continue
			}
			ch.Routes = append(ch.Routes, route)
		}
	}
	def, err := cc.destination(service, "", 0, nil)
	if err != nil {
		errs = append(errs, err)
	}
	ch.Default = def
	return ch, errors.Join(errs...)
}

func (cc *chainCompiler) route(service string, rt routerRoute) (lb.Route, error) {
	d := rt.Destination
	out := lb.Route{
		PrefixRewrite:   d.PrefixRewrite,
		RequestTimeout:  time.Duration(d.RequestTimeout),
		Retry:           d.retryPolicy(),
		RequestHeaders:  d.RequestHeaders.ops(),
		ResponseHeaders: d.ResponseHeaders.ops(),
	}
	if rt.Match != nil && rt.Match.HTTP != nil {
		m := rt.Match.HTTP
		out.Match = lb.RouteMatch{PathExact: m.PathExact, PathPrefix: m.PathPrefix,
			CaseInsensitive: m.CaseInsensitive, Methods: m.Methods}
		var err error
		if out.Match.PathRegex, err = compileRegex(m.PathRegex); err != nil {
			return out, err
		}
		for _, h := range m.Header {
			re, err := compileRegex(h.Regex)
			if err != nil {
				return out, err
			}
			out.Match.Headers = append(out.Match.Headers, lb.HeaderMatch{Name: h.Name, Present: h.Present,
				Exact: h.Exact, Prefix: h.Prefix, Suffix: h.Suffix, Regex: re, Invert: h.Invert})
		}
		for _, q := range m.QueryParam {
			re, err := compileRegex(q.Regex)
			if err != nil {
				return out, err
			}
			out.Match.Query = append(out.Match.Query, lb.QueryMatch{Name: q.Name, Present: q.Present, Exact: q.Exact, Regex: re})
		}
	}
	dest := d.Service
	if dest == "" {
		dest = service
	}
	splits, err := cc.destination(dest, d.ServiceSubset, 0, nil)
	out.Splits = splits
	return out, err
}

func compileRegex(s string) (*regexp.Regexp, error) {
	if s == "" {
		return nil, nil
	}
	return regexp.Compile(s)
}

// destination returns the splits a request for service (and subset) takes:
// the service's splitter, flattened, or its one resolved target. via lists
// the splitters on the way, to catch loops.
func (cc *chainCompiler) destination(service, subset string, depth int, via []string) ([]lb.Split, error) {
	sp := cc.set.splitters[service]
	if subset != "" || sp == nil {
		t, err := cc.resolve(service, subset, 0, nil)
		if err != nil {
			return nil, err
		}
		return []lb.Split{{Weight: 100, Target: t}}, nil
	}
	if slices.Contains(via, service) || depth >= maxChainDepth {
		return nil, fmt.Errorf("service-splitter %s: splitters loop or nest too deep (%v)", service, append(via, service))
	}
	via = append(via, service)
	var out []lb.Split
	for i, s := range sp.Splits {
		target := s.Service
		if target == "" {
			target = service
		}
		if s.Weight == 0 {
			// A leg at 0 % takes nothing, but its target must still exist.
			if _, err := cc.resolve(target, s.ServiceSubset, 0, nil); err != nil {
				return nil, fmt.Errorf("service-splitter %s: Splits[%d]: %w", service, i, err)
			}
			continue
		}
		var inner []lb.Split
		var err error
		if target != service && s.ServiceSubset == "" {
			inner, err = cc.destination(target, "", depth+1, via)
		} else {
			var t lb.Target
			t, err = cc.resolve(target, s.ServiceSubset, 0, nil)
			inner = []lb.Split{{Weight: 100, Target: t}}
		}
		if err != nil {
			return nil, fmt.Errorf("service-splitter %s: Splits[%d]: %w", service, i, err)
		}
		for _, leg := range inner {
			leg.Weight = leg.Weight * s.Weight / 100
			leg.RequestHeaders = mergeOps(s.RequestHeaders.ops(), leg.RequestHeaders)
			leg.ResponseHeaders = mergeOps(s.ResponseHeaders.ops(), leg.ResponseHeaders)
			out = append(out, leg)
		}
	}
	return roundSplits(out), nil
}

// roundSplits rounds nested weights to 0.01 % so that they still add up
// to 100: the remainder goes to the heaviest leg.
func roundSplits(splits []lb.Split) []lb.Split {
	if len(splits) == 0 {
		return splits
	}
	var total int64
	heaviest := 0
	for i := range splits {
		bp := int64(splits[i].Weight*100 + 0.5)
		splits[i].Weight = float64(bp) / 100
		total += bp
		if splits[i].Weight > splits[heaviest].Weight {
			heaviest = i
		}
	}
	splits[heaviest].Weight += float64(10000-total) / 100
	return splits
}

// mergeOps puts an outer splitter's header changes before an inner one's.
func mergeOps(outer, inner lb.HeaderOps) lb.HeaderOps {
	if len(inner.Add)+len(inner.Set)+len(inner.Remove) == 0 {
		return outer
	}
	out := lb.HeaderOps{Add: map[string]string{}, Set: map[string]string{}, Remove: slices.Concat(outer.Remove, inner.Remove)}
	for _, m := range []map[string]string{outer.Add, inner.Add} {
		for k, v := range m {
			out.Add[k] = v
		}
	}
	for _, m := range []map[string]string{outer.Set, inner.Set} {
		for k, v := range m {
			out.Set[k] = v
		}
	}
	return out
}

// resolve follows service's resolver to the target a request ends at:
// redirects, then the default subset. It records the target's settings.
func (cc *chainCompiler) resolve(service, subset string, depth int, via []string) (lb.Target, error) {
	r := cc.set.resolvers[service]
	if r != nil && r.Redirect != nil {
		if slices.Contains(via, service) || depth >= maxChainDepth {
			return lb.Target{}, fmt.Errorf("service-resolver %s: redirects loop or chain too deep (%v)", service, append(via, service))
		}
		next, nextSubset := r.Redirect.Service, r.Redirect.ServiceSubset
		if next == "" {
			next = service
		}
		if next == service {
			return cc.resolve(service, nextSubset, depth+1, append(via, service))
		}
		return cc.resolve(next, nextSubset, depth+1, append(via, service))
	}
	if subset == "" && r != nil {
		subset = r.DefaultSubset
	}
	if subset != "" && (r == nil || !hasSubset(r, subset)) {
		return lb.Target{}, fmt.Errorf("service %s has no subset %q (no service-resolver %s defines it)", service, subset, service)
	}
	t := lb.Target{Service: service, Subset: subset}
	if cc.targets != nil {
		if _, done := cc.targets[t]; !done {
			cc.targets[t] = lb.Resolved{} // placeholder: failovers may lead back here
			res := cc.resolved(t)
			if err := cc.failover(t, &res); err != nil {
				return lb.Target{}, err
			}
			cc.targets[t] = res
		}
	}
	return t, nil
}

func hasSubset(r *serviceResolver, subset string) bool {
	_, ok := r.Subsets[subset]
	return ok
}

// resolved returns the settings of a target from its service's resolver
// and service-defaults, failover aside.
func (cc *chainCompiler) resolved(t lb.Target) lb.Resolved {
	var res lb.Resolved
	if d := cc.set.defaults[t.Service]; d != nil && d.LoadBalancer != nil {
		res.Policy = d.LoadBalancer.Policy
	}
	r := cc.set.resolvers[t.Service]
	if r == nil {
		return res
	}
	res.ConnectTimeout, res.RequestTimeout = time.Duration(r.ConnectTimeout), time.Duration(r.RequestTimeout)
	if r.PrioritizeByLocality != nil {
		res.Locality = localityModes[r.PrioritizeByLocality.Mode]
	}
	if r.LoadBalancer != nil {
		if name, key, err := r.LoadBalancer.policy(); err == nil && name != "" {
			res.Policy, res.HashKey = name, key
		}
	}
	return res
}

// failover fills in where t's requests go while t has no instance.
func (cc *chainCompiler) failover(t lb.Target, res *lb.Resolved) error {
	r := cc.set.resolvers[t.Service]
	if r == nil || len(r.Failover) == 0 {
		return nil
	}
	f, ok := r.Failover[t.Subset]
	if !ok {
		if f, ok = r.Failover["*"]; !ok {
			return nil
		}
	}
	for _, ft := range f.targets(t.Service) {
		// A failover target is resolved like any destination, but its own
		// failover is not followed (Consul does not chain them either).
		sub := &chainCompiler{set: cc.set}
		target, err := sub.resolve(ft.Service, ft.ServiceSubset, 0, nil)
		if err != nil {
			return fmt.Errorf("service-resolver %s: failover: %w", t.Service, err)
		}
		if target == t {
			continue
		}
		res.Failover = append(res.Failover, target)
		if _, ok := cc.targets[target]; !ok {
			cc.targets[target] = cc.resolved(target)
		}
	}
	return nil
}

// describe renders a compiled chain for people: one line per route and
// the default, each with its splits and the targets' settings.
func describeChain(service string, ch lb.Chain, targets map[lb.Target]lb.Resolved) []string {
	var lines []string
	legs := func(splits []lb.Split) string {
		s := ""
		for i, sp := range splits {
			if i > 0 {
				s += ", "
			}
			s += fmt.Sprintf("%s %g%%", sp.Target, sp.Weight)
			if res, ok := targets[sp.Target]; ok {
				s += describeResolved(res)
			}
		}
		return s
	}
	for i, r := range ch.Routes {
		lines = append(lines, fmt.Sprintf("route %d: %s → %s%s", i, describeMatch(r.Match), legs(r.Splits), describeRoute(r)))
	}
	lines = append(lines, "default → "+legs(ch.Default))
	return lines
}

func describeMatch(m lb.RouteMatch) string {
	var parts []string
	switch {
	case m.PathExact != "":
		parts = append(parts, "path = "+m.PathExact)
	case m.PathPrefix != "":
		parts = append(parts, "path prefix "+m.PathPrefix)
	case m.PathRegex != nil:
		parts = append(parts, "path ~ "+m.PathRegex.String())
	}
	if len(m.Methods) > 0 {
		parts = append(parts, fmt.Sprint("methods ", m.Methods))
	}
	for _, h := range m.Headers {
		parts = append(parts, "header "+h.Name)
	}
	for _, q := range m.Query {
		parts = append(parts, "query "+q.Name)
	}
	if len(parts) == 0 {
		return "every request"
	}
	sort.Strings(parts[1:])
	s := parts[0]
	for _, p := range parts[1:] {
		s += ", " + p
	}
	return s
}

func describeRoute(r lb.Route) string {
	s := ""
	if r.PrefixRewrite != "" {
		s += " rewrite " + r.PrefixRewrite
	}
	if r.RequestTimeout > 0 {
		s += " timeout " + r.RequestTimeout.String()
	}
	if r.Retry != nil {
		s += fmt.Sprintf(" retries %d", r.Retry.NumRetries)
		if len(r.Retry.OnStatus) > 0 {
			s += fmt.Sprint(" on ", r.Retry.OnStatus)
		}
	}
	return s
}

func describeResolved(res lb.Resolved) string {
	var parts []string
	if res.Policy != "" {
		parts = append(parts, res.Policy)
	}
	if res.Locality != "" {
		parts = append(parts, "locality "+string(res.Locality))
	}
	if res.ConnectTimeout > 0 {
		parts = append(parts, "connect "+res.ConnectTimeout.String())
	}
	if res.RequestTimeout > 0 {
		parts = append(parts, "timeout "+res.RequestTimeout.String())
	}
	for _, f := range res.Failover {
		parts = append(parts, "failover "+f.String())
	}
	if len(parts) == 0 {
		return ""
	}
	s := " ("
	for i, p := range parts {
		if i > 0 {
			s += ", "
		}
		s += p
	}
	return s + ")"
}
