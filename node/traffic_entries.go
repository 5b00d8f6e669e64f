package node

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/shoal-mesh/shoal/lb"
)

// Traffic management entries in Consul's shapes: service-resolver,
// service-splitter and service-router, which chain.go compiles into the
// proxy's table. Fields Consul has and Shoal does not honour (other
// datacenters, peers, namespaces, IdleTimeout, ring sizes, cookie hashing)
// are not declared here, so decodeConfigEntry refuses an entry that sets
// them instead of ignoring them.

// Config entry kinds of traffic management.
const (
	kindServiceResolver = "service-resolver"
	kindServiceSplitter = "service-splitter"
	kindServiceRouter   = "service-router"
)

// Bounds on traffic entries, besides the store's size limit.
const (
	maxRoutes       = 256
	maxSplits       = 64
	maxSubsets      = 64
	maxMatches      = 32
	maxRegexLen     = 1024
	maxHeaderOps    = 64
	maxFailoverList = 8
)

// checkDuration bounds a timeout: not negative, at most a day.
func checkDuration(what string, d duration) error {
	if d < 0 || time.Duration(d) > 24*time.Hour {
		return fmt.Errorf("%s %v: want 0 to 24h", what, time.Duration(d))
	}
	return nil
}

// subsetNameRe is a DNS label, as Consul requires of subset names.
var subsetNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// serviceResolver is a service-resolver entry: which instances of the
// service Name satisfy a request, and how they are balanced.
type serviceResolver struct {
	entryHeader
	DefaultSubset        string                      `json:",omitempty"`
	Subsets              map[string]resolverSubset   `json:",omitempty"`
	Redirect             *resolverRedirect           `json:",omitempty"`
	Failover             map[string]resolverFailover `json:",omitempty"`
	ConnectTimeout       duration                    `json:",omitempty"`
	RequestTimeout       duration                    `json:",omitempty"`
	PrioritizeByLocality *prioritizeByLocality       `json:",omitempty"`
	LoadBalancer         *resolverLoadBalancer       `json:",omitempty"`
}

// resolverSubset selects instances by a filter over Consul's health entry
// shape (Service.Meta.version == v1, "canary" in Service.Tags).
type resolverSubset struct {
	Filter      string `json:",omitempty"`
	OnlyPassing bool   `json:",omitempty"`
}

type resolverRedirect struct {
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
}

type resolverFailover struct {
	Service       string           `json:",omitempty"`
	ServiceSubset string           `json:",omitempty"`
	Targets       []failoverTarget `json:",omitempty"`
}

type failoverTarget struct {
	Service       string `json:",omitempty"`
	ServiceSubset string `json:",omitempty"`
}

// prioritizeByLocality is Consul's field: Mode "none" ignores zones,
// "failover" keeps traffic in the caller's zone while it has a healthy
// instance; Shoal's default, "adaptive", spills over when the local zone
// is slower (see lb/locality.go).
type prioritizeByLocality struct {
	Mode string `json:",omitempty"`
}

// Locality modes of prioritizeByLocality.
var localityModes = map[string]lb.Locality{
	"":         lb.LocalityAdaptive,
	"adaptive": lb.LocalityAdaptive,
	"failover": lb.LocalityStrict,
	"none":     lb.LocalityOff,
}

type resolverLoadBalancer struct {
	Policy             string              `json:",omitempty"`
	LeastRequestConfig *leastRequestConfig `json:",omitempty"`
	HashPolicies       []hashPolicy        `json:",omitempty"`
}

type leastRequestConfig struct {
	ChoiceCount uint32 `json:",omitempty"`
}

type hashPolicy struct {
	Field      string `json:",omitempty"`
	FieldValue string `json:",omitempty"`
	SourceIP   bool   `json:",omitempty"`
	Terminal   bool   `json:",omitempty"`
}

// consulPolicies maps Consul's policy names to Shoal's; Shoal's own names
// are taken as they are.
var consulPolicies = map[string]string{"ring_hash": lb.PolicyHash, "maglev": lb.PolicyHash}

func (e *serviceResolver) normalize() error {
	if err := e.check(false); err != nil {
		return err
	}
	var errs []error
	if len(e.Subsets) > maxSubsets {
		errs = append(errs, fmt.Errorf("Subsets: %d subsets, over the limit of %d", len(e.Subsets), maxSubsets))
	}
	for _, name := range sortedKeys(e.Subsets) {
		if !subsetNameRe.MatchString(name) {
			errs = append(errs, fmt.Errorf("Subsets: name %q: want lower-case letters, digits and '-' (a DNS label)", name))
			continue
		}
		if _, err := subsetFilterOf(e.Subsets[name].Filter); err != nil {
			errs = append(errs, fmt.Errorf("Subsets[%s].Filter: %v", name, err))
		}
	}
	if e.DefaultSubset != "" {
		if _, ok := e.Subsets[e.DefaultSubset]; !ok {
			errs = append(errs, fmt.Errorf("DefaultSubset %q is not one of Subsets", e.DefaultSubset))
		}
	}
	if r := e.Redirect; r != nil {
		switch {
		case *r == resolverRedirect{}:
			e.Redirect = nil
		case len(e.Subsets) > 0 || e.DefaultSubset != "" || len(e.Failover) > 0:
			errs = append(errs, errors.New("Redirect: a resolver that redirects may not also define subsets or failover"))
		case r.Service == "" && r.ServiceSubset == "":
		default:
			if r.Service != "" {
				if err := validateName(r.Service); err != nil {
					errs = append(errs, fmt.Errorf("Redirect.Service: %w", err))
				}
			}
			if r.Service == "" || r.Service == e.Name {
				if r.ServiceSubset == "" {
					errs = append(errs, errors.New("Redirect: a redirect to the service itself needs a ServiceSubset"))
				} else if _, ok := e.Subsets[r.ServiceSubset]; !ok {
					errs = append(errs, fmt.Errorf("Redirect.ServiceSubset %q is not one of Subsets", r.ServiceSubset))
				}
			}
		}
	}
	for _, key := range sortedKeys(e.Failover) {
		f := e.Failover[key]
		if key != "*" {
			if _, ok := e.Subsets[key]; !ok {
				errs = append(errs, fmt.Errorf("Failover[%s]: not one of Subsets (or *)", key))
			}
		}
		targets := f.targets(e.Name)
		switch {
		case len(targets) == 0:
			errs = append(errs, fmt.Errorf("Failover[%s]: needs a Service, ServiceSubset or Targets", key))
		case len(f.Targets) > 0 && (f.Service != "" || f.ServiceSubset != ""):
			errs = append(errs, fmt.Errorf("Failover[%s]: Targets and Service/ServiceSubset are exclusive", key))
		case len(targets) > maxFailoverList:
			errs = append(errs, fmt.Errorf("Failover[%s]: %d targets, at most %d", key, len(targets), maxFailoverList))
		}
		for _, t := range targets {
			if err := validateName(t.Service); err != nil {
				errs = append(errs, fmt.Errorf("Failover[%s]: %w", key, err))
			}
			if t.Service == e.Name && t.ServiceSubset != "" {
				if _, ok := e.Subsets[t.ServiceSubset]; !ok {
					errs = append(errs, fmt.Errorf("Failover[%s]: subset %q is not one of Subsets", key, t.ServiceSubset))
				}
			}
			if t.Service == e.Name && (t.ServiceSubset == key || (key == "*" && t.ServiceSubset == "")) {
				errs = append(errs, fmt.Errorf("Failover[%s]: fails over to itself", key))
			}
		}
	}
	errs = append(errs, checkDuration("ConnectTimeout", e.ConnectTimeout), checkDuration("RequestTimeout", e.RequestTimeout))
	if p := e.PrioritizeByLocality; p != nil {
		p.Mode = strings.ToLower(p.Mode)
		if _, ok := localityModes[p.Mode]; !ok {
			errs = append(errs, fmt.Errorf("PrioritizeByLocality.Mode %q: want none, failover or adaptive", p.Mode))
		}
	}
	if lbc := e.LoadBalancer; lbc != nil {
		if _, _, err := lbc.policy(); err != nil {
			errs = append(errs, fmt.Errorf("LoadBalancer: %w", err))
		}
	}
	return errors.Join(errs...)
}

// targets returns the failover's targets, defaults filled in: a target
// without a service is the resolver's own.
func (f resolverFailover) targets(service string) []failoverTarget {
	list := f.Targets
	if len(list) == 0 && (f.Service != "" || f.ServiceSubset != "") {
		list = []failoverTarget{{Service: f.Service, ServiceSubset: f.ServiceSubset}}
	}
	out := make([]failoverTarget, 0, len(list))
	for _, t := range list {
		if t.Service == "" {
			t.Service = service
		}
		out = append(out, t)
	}
	return out
}

// policy returns the balancing policy and hash key the load balancer
// section asks for, in Shoal's terms.
func (l *resolverLoadBalancer) policy() (name, hashKey string, err error) {
	name = strings.ToLower(l.Policy)
	if c, ok := consulPolicies[name]; ok {
		name = c
	}
	if name != "" && !lb.ValidPolicy(name) {
		return "", "", fmt.Errorf("Policy %q: want round_robin, least_request, random, ring_hash, maglev, ewma or latency", l.Policy)
	}
	if c := l.LeastRequestConfig; c != nil && c.ChoiceCount != 0 && c.ChoiceCount != 2 {
		return "", "", fmt.Errorf("LeastRequestConfig.ChoiceCount %d: Shoal draws 2", c.ChoiceCount)
	}
	switch len(l.HashPolicies) {
	case 0:
	case 1:
		if name != lb.PolicyHash {
			return "", "", errors.New("HashPolicies: only with Policy ring_hash or maglev")
		}
		h := l.HashPolicies[0]
		switch {
		case h.SourceIP && h.Field == "":
			hashKey = "ip"
		case !h.SourceIP && (h.Field == "header" || h.Field == "cookie") && h.FieldValue != "":
			hashKey = h.Field + ":" + h.FieldValue
		default:
			return "", "", errors.New(`HashPolicies: want SourceIP, or Field "header" or "cookie" with a FieldValue`)
		}
	default:
		return "", "", errors.New("HashPolicies: Shoal hashes on one key")
	}
	return name, hashKey, nil
}

// serviceSplitter is a service-splitter entry: requests for Name split by
// weight over services and subsets.
type serviceSplitter struct {
	entryHeader
	Splits []splitterSplit
}

type splitterSplit struct {
	Weight          float64
	Service         string           `json:",omitempty"`
	ServiceSubset   string           `json:",omitempty"`
	RequestHeaders  *headerModifiers `json:",omitempty"`
	ResponseHeaders *headerModifiers `json:",omitempty"`
}

func (e *serviceSplitter) normalize() error {
	if err := e.check(false); err != nil {
		return err
	}
	if len(e.Splits) == 0 || len(e.Splits) > maxSplits {
		return fmt.Errorf("Splits: want 1 to %d, got %d", maxSplits, len(e.Splits))
	}
	var errs []error
	var total int64
	for i := range e.Splits {
		s := &e.Splits[i]
		w := math.Round(s.Weight * 100)
		if math.IsNaN(s.Weight) || s.Weight < 0 || s.Weight > 100 || math.Abs(w-s.Weight*100) > 1e-6 {
			errs = append(errs, fmt.Errorf("Splits[%d].Weight %v: want 0 to 100, to 0.01", i, s.Weight))
		}
		total += int64(w)
		if s.Service != "" {
			if err := validateName(s.Service); err != nil {
				errs = append(errs, fmt.Errorf("Splits[%d].Service: %w", i, err))
			}
		}
		if s.ServiceSubset != "" && !subsetNameRe.MatchString(s.ServiceSubset) {
			errs = append(errs, fmt.Errorf("Splits[%d].ServiceSubset %q: not a subset name", i, s.ServiceSubset))
		}
		errs = append(errs, s.RequestHeaders.check(fmt.Sprintf("Splits[%d].RequestHeaders", i)),
			s.ResponseHeaders.check(fmt.Sprintf("Splits[%d].ResponseHeaders", i)))
	}
	if errors.Join(errs...) == nil && total != 10000 {
		errs = append(errs, fmt.Errorf("Splits: the weights add up to %.2f, want 100", float64(total)/100))
	}
	return errors.Join(errs...)
}

// headerModifiers is Consul's HTTPHeaderModifiers.
type headerModifiers struct {
	Add    map[string]string `json:",omitempty"`
	Set    map[string]string `json:",omitempty"`
	Remove []string          `json:",omitempty"`
}

// headerNameRe is an HTTP field name (RFC 9110 token).
var headerNameRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func (h *headerModifiers) check(what string) error {
	if h == nil {
		return nil
	}
	if len(h.Add)+len(h.Set)+len(h.Remove) > maxHeaderOps {
		return fmt.Errorf("%s: over %d changes", what, maxHeaderOps)
	}
	names := slices.Concat(sortedKeys(h.Add), sortedKeys(h.Set), h.Remove)
	for _, n := range names {
		if len(n) > 256 || !headerNameRe.MatchString(n) {
			return fmt.Errorf("%s: %q is not a header name", what, n)
		}
		if strings.EqualFold(n, "Host") || strings.EqualFold(n, "Content-Length") || strings.EqualFold(n, "Transfer-Encoding") {
			return fmt.Errorf("%s: %s may not be changed", what, n)
		}
	}
	for _, m := range []map[string]string{h.Add, h.Set} {
		for k, v := range m {
			if err := validateText(what+" value of "+k, v, 4096); err != nil {
				return err
			}
		}
	}
	return nil
}

func (h *headerModifiers) ops() lb.HeaderOps {
	if h == nil {
		return lb.HeaderOps{}
	}
	return lb.HeaderOps{Add: h.Add, Set: h.Set, Remove: h.Remove}
}

// serviceRouter is a service-router entry: HTTP routes of Name, the first
// that matches deciding where a request goes.
type serviceRouter struct {
	entryHeader
	Routes []routerRoute
}

type routerRoute struct {
	Match       *routeMatch       `json:",omitempty"`
	Destination *routeDestination `json:",omitempty"`
}

type routeMatch struct {
	HTTP *routeHTTPMatch `json:",omitempty"`
}

type routeHTTPMatch struct {
	PathExact       string             `json:",omitempty"`
	PathPrefix      string             `json:",omitempty"`
	PathRegex       string             `json:",omitempty"`
	CaseInsensitive bool               `json:",omitempty"`
	Header          []routeHeaderMatch `json:",omitempty"`
	QueryParam      []routeQueryMatch  `json:",omitempty"`
	Methods         []string           `json:",omitempty"`
}

type routeHeaderMatch struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Prefix  string `json:",omitempty"`
	Suffix  string `json:",omitempty"`
	Regex   string `json:",omitempty"`
	Invert  bool   `json:",omitempty"`
}

type routeQueryMatch struct {
	Name    string
	Present bool   `json:",omitempty"`
	Exact   string `json:",omitempty"`
	Regex   string `json:",omitempty"`
}

type routeDestination struct {
	Service               string           `json:",omitempty"`
	ServiceSubset         string           `json:",omitempty"`
	PrefixRewrite         string           `json:",omitempty"`
	RequestTimeout        duration         `json:",omitempty"`
	NumRetries            uint32           `json:",omitempty"`
	RetryOnConnectFailure bool             `json:",omitempty"`
	RetryOnStatusCodes    []uint32         `json:",omitempty"`
	RetryOn               []string         `json:",omitempty"`
	RequestHeaders        *headerModifiers `json:",omitempty"`
	ResponseHeaders       *headerModifiers `json:",omitempty"`
}

// retryOnConditions are the RetryOn values Shoal honours, as Envoy names
// them; each adds statuses or resets to the route's retries.
var retryOnConditions = map[string][]int{
	"5xx":                    {500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511},
	"gateway-error":          {502, 503, 504},
	"retriable-4xx":          {409},
	"reset":                  nil,
	"connect-failure":        nil,
	"refused-stream":         nil,
	"retriable-status-codes": nil,
}

// httpMethods are the methods a route may match.
var httpMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true}

func (e *serviceRouter) normalize() error {
	if err := e.check(false); err != nil {
		return err
	}
	if len(e.Routes) > maxRoutes {
		return fmt.Errorf("Routes: %d routes, over the limit of %d", len(e.Routes), maxRoutes)
	}
	var errs []error
	for i := range e.Routes {
		if err := e.Routes[i].normalize(); err != nil {
			errs = append(errs, fmt.Errorf("Routes[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (r *routerRoute) normalize() error {
	var errs []error
	var m *routeHTTPMatch
	if r.Match != nil {
		m = r.Match.HTTP
	}
	if m != nil {
		paths := 0
		for _, p := range []string{m.PathExact, m.PathPrefix, m.PathRegex} {
			if p != "" {
				paths++
			}
		}
		if paths > 1 {
			errs = append(errs, errors.New("Match.HTTP: at most one of PathExact, PathPrefix and PathRegex"))
		}
		for what, p := range map[string]string{"PathExact": m.PathExact, "PathPrefix": m.PathPrefix} {
			if p != "" && !strings.HasPrefix(p, "/") {
				errs = append(errs, fmt.Errorf("Match.HTTP.%s %q: must begin with /", what, p))
			}
			errs = append(errs, validateText("Match.HTTP."+what, p, maxRegexLen))
		}
		errs = append(errs, checkRegex("Match.HTTP.PathRegex", m.PathRegex))
		if len(m.Header)+len(m.QueryParam)+len(m.Methods) > maxMatches {
			errs = append(errs, fmt.Errorf("Match.HTTP: over %d header, query and method matches", maxMatches))
		}
		for j, h := range m.Header {
			what := fmt.Sprintf("Match.HTTP.Header[%d]", j)
			if !headerNameRe.MatchString(h.Name) {
				errs = append(errs, fmt.Errorf("%s: Name %q is not a header name", what, h.Name))
			}
			if n := countSet(h.Present, h.Exact != "", h.Prefix != "", h.Suffix != "", h.Regex != ""); n != 1 {
				errs = append(errs, fmt.Errorf("%s (%s): want exactly one of Present, Exact, Prefix, Suffix and Regex", what, h.Name))
			}
			errs = append(errs, checkRegex(what+".Regex", h.Regex))
		}
		for j, q := range m.QueryParam {
			what := fmt.Sprintf("Match.HTTP.QueryParam[%d]", j)
			if q.Name == "" || validateText(what, q.Name, 256) != nil {
				errs = append(errs, fmt.Errorf("%s: Name %q is not a parameter name", what, q.Name))
			}
			if n := countSet(q.Present, q.Exact != "", q.Regex != ""); n != 1 {
				errs = append(errs, fmt.Errorf("%s (%s): want exactly one of Present, Exact and Regex", what, q.Name))
			}
			errs = append(errs, checkRegex(what+".Regex", q.Regex))
		}
		for j := range m.Methods {
			m.Methods[j] = strings.ToUpper(m.Methods[j])
			if !httpMethods[m.Methods[j]] {
				errs = append(errs, fmt.Errorf("Match.HTTP.Methods[%d] %q: not an HTTP method", j, m.Methods[j]))
			}
		}
	}
	d := r.Destination
	if d == nil {
		errs = append(errs, errors.New("Destination: missing"))
		return errors.Join(errs...)
	}
	if d.Service != "" {
		if err := validateName(d.Service); err != nil {
			errs = append(errs, fmt.Errorf("Destination.Service: %w", err))
		}
	}
	if d.ServiceSubset != "" && !subsetNameRe.MatchString(d.ServiceSubset) {
		errs = append(errs, fmt.Errorf("Destination.ServiceSubset %q: not a subset name", d.ServiceSubset))
	}
	if d.PrefixRewrite != "" {
		if m == nil || (m.PathPrefix == "" && m.PathExact == "") {
			errs = append(errs, errors.New("Destination.PrefixRewrite: needs Match.HTTP.PathPrefix or PathExact"))
		}
		errs = append(errs, validateText("Destination.PrefixRewrite", d.PrefixRewrite, maxRegexLen))
	}
	errs = append(errs, checkDuration("Destination.RequestTimeout", d.RequestTimeout))
	if d.NumRetries > 16 {
		errs = append(errs, fmt.Errorf("Destination.NumRetries %d: at most 16", d.NumRetries))
	}
	for _, s := range d.RetryOnStatusCodes {
		if s < 100 || s > 599 {
			errs = append(errs, fmt.Errorf("Destination.RetryOnStatusCodes: %d is not a status", s))
		}
	}
	for _, c := range d.RetryOn {
		if _, ok := retryOnConditions[c]; !ok {
			errs = append(errs, fmt.Errorf("Destination.RetryOn %q: Shoal retries on 5xx, gateway-error, retriable-4xx, reset, connect-failure, refused-stream and retriable-status-codes", c))
		}
	}
	errs = append(errs, d.RequestHeaders.check("Destination.RequestHeaders"), d.ResponseHeaders.check("Destination.ResponseHeaders"))
	return errors.Join(errs...)
}

func countSet(flags ...bool) int {
	n := 0
	for _, f := range flags {
		if f {
			n++
		}
	}
	return n
}

// checkRegex refuses a regular expression Go's RE2 engine cannot compile
// or that is too long.
func checkRegex(what, re string) error {
	if re == "" {
		return nil
	}
	if len(re) > maxRegexLen {
		return fmt.Errorf("%s: %d bytes, over the limit of %d", what, len(re), maxRegexLen)
	}
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	return nil
}

// retryPolicy returns the route's retry rules, or nil when it sets none
// (the proxy's own apply).
func (d *routeDestination) retryPolicy() *lb.RetryPolicy {
	if d.NumRetries == 0 && !d.RetryOnConnectFailure && len(d.RetryOnStatusCodes) == 0 && len(d.RetryOn) == 0 {
		return nil
	}
	p := &lb.RetryPolicy{NumRetries: int(d.NumRetries)}
	if p.NumRetries == 0 {
		p.NumRetries = 1 // Envoy's default once a retry condition is set
	}
	for _, s := range d.RetryOnStatusCodes {
		p.OnStatus = append(p.OnStatus, int(s))
	}
	for _, c := range d.RetryOn {
		p.OnStatus = append(p.OnStatus, retryOnConditions[c]...)
		if c == "reset" || c == "refused-stream" {
			p.OnReset = true
		}
	}
	slices.Sort(p.OnStatus)
	p.OnStatus = slices.Compact(p.OnStatus)
	return p
}
