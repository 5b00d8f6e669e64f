package node

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
)

// traffic keeps the proxy's table in step with the traffic entries of the
// config store: at every change of the entries it compiles the discovery
// chains again (chain.go), swaps the proxy's table, and moves the
// generation the view adds to every service's, so that pools pick up new
// subsets and settings at their next request.
type traffic struct {
	cluster *gossip.Cluster
	proxy   *lb.Proxy // nil: the agent runs no proxy
	log     *slog.Logger

	gen atomic.Uint64
	cur atomic.Pointer[trafficPolicy]

	mu     sync.Mutex // guards logged
	logged map[string]string
}

func newTraffic(c *gossip.Cluster, log *slog.Logger) *traffic {
	t := &traffic{cluster: c, log: log.With("component", "traffic"), logged: map[string]string{}}
	t.cur.Store(compileTraffic(loadEntrySet(nil)))
	return t
}

// entries returns the current traffic entries.
func (t *traffic) entries() *entrySet {
	var all []gossip.Entry
	for _, kind := range []string{kindServiceDefaults, kindServiceResolver, kindServiceSplitter, kindServiceRouter} {
		all = append(all, t.cluster.Entries(kind)...)
	}
	return loadEntrySet(all)
}

// refresh compiles the current entries and installs them.
func (t *traffic) refresh() {
	tp := compileTraffic(t.entries())
	table, err := lb.NewTable(tp.routing)
	if err != nil {
		// Unreachable: compileTraffic checked every chain alone, and
		// chains do not interfere. Keep the table that works.
		t.log.Error("traffic policy does not compile: the previous one stays", "err", err)
		return
	}
	t.cur.Store(tp)
	t.gen.Add(1)
	if t.proxy != nil {
		t.proxy.SetTable(table)
	}
	t.logErrors(tp.errors)
}

// logErrors logs each chain error once, when it appears or changes: a
// chain that does not compile (entries written concurrently on agents that
// could not check them against each other) routes straight to its service.
func (t *traffic) logErrors(errs map[string]error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for service, err := range errs {
		if t.logged[service] != err.Error() {
			t.log.Warn("discovery chain does not compile: requests go straight to the service", "service", service, "err", err)
			t.logged[service] = err.Error()
		}
	}
	for service := range t.logged {
		if errs[service] == nil {
			delete(t.logged, service)
		}
	}
}

// generation moves at every refresh.
func (t *traffic) generation() uint64 {
	if t == nil {
		return 0
	}
	return t.gen.Load()
}

// subsets returns the resolver subsets of a service.
func (t *traffic) subsets(service string) []subsetFilter {
	if t == nil {
		return nil
	}
	return t.cur.Load().subsets[service]
}

// check refuses a change that would break a chain that compiles now: a
// split to a subset no resolver defines, a loop, a resolver deleted under
// a router that needs it. Consul checks the same when a write arrives.
func (t *traffic) check(change func(*entrySet)) error {
	before := compileTraffic(t.entries())
	next := t.entries().clone()
	change(next)
	after := compileTraffic(next)
	for _, service := range slices.Sorted(maps.Keys(after.errors)) {
		if before.errors[service] == nil {
			return fmt.Errorf("the discovery chain of %s would not compile: %v", service, after.errors[service])
		}
	}
	return nil
}

// chainView is a service's compiled chain as the status page shows it.
type chainView struct {
	Service string
	// Lines describes the routes and the default, in order.
	Lines []string `json:",omitempty"`
	// Error is why the chain does not compile; traffic then goes straight
	// to the service.
	Error string `json:",omitempty"`
}

// chains describes every chain as the current entries compile, ordered
// by service: compiled afresh, so that a reader woken by a change of the
// entries never sees the chains of before it.
func (t *traffic) chains() []chainView {
	tp := compileTraffic(t.entries())
	var out []chainView
	for _, service := range slices.Sorted(maps.Keys(tp.routing.Chains)) {
		out = append(out, chainView{Service: service, Lines: describeChain(service, tp.routing.Chains[service], tp.routing.Targets)})
	}
	for _, service := range slices.Sorted(maps.Keys(tp.errors)) {
		out = append(out, chainView{Service: service, Error: tp.errors[service].Error()})
	}
	slices.SortStableFunc(out, func(a, b chainView) int {
		switch {
		case a.Service < b.Service:
			return -1
		case a.Service > b.Service:
			return 1
		}
		return 0
	})
	return out
}
