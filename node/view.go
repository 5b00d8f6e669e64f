package node

import (
	"encoding/json"
	"maps"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
)

// lbView shows the proxy the instances of the replicated catalog that may
// take traffic: passing ones with their passing weight, warning ones with
// their warning weight (0 takes them out), none that are critical, in
// maintenance, or on a node that is not alive.
type lbView struct {
	cat *gossip.Catalog
	// With mesh, instances of nodes other than local are reached through
	// their agents (lb.Instance.Via).
	local string
	mesh  bool
	// defaults holds the service-defaults entries; nil: none apply.
	defaults *serviceDefaultsView
}

// serviceDefaultsView shows the proxy the balancing policy service-defaults
// entries set, as a snapshot swapped at every change of the entries, so
// that the request path reads it without a lock.
type serviceDefaultsView struct {
	cluster *gossip.Cluster
	// gen moves at every change, so that every pool rebuilds.
	gen      atomic.Uint64
	policies atomic.Pointer[map[string]string] // service → policy
}

func newServiceDefaultsView(c *gossip.Cluster) *serviceDefaultsView {
	v := &serviceDefaultsView{cluster: c}
	v.refresh()
	return v
}

// refresh takes the current entries.
func (v *serviceDefaultsView) refresh() {
	policies := map[string]string{}
	for _, e := range v.cluster.Entries(kindServiceDefaults) {
		var sd serviceDefaults
		if json.Unmarshal(e.Body, &sd) == nil && sd.LoadBalancer != nil && sd.LoadBalancer.Policy != "" {
			policies[sd.Name] = sd.LoadBalancer.Policy
		}
	}
	v.policies.Store(&policies)
	v.gen.Add(1)
}

func (v *serviceDefaultsView) generation() uint64 {
	if v == nil {
		return 0
	}
	return v.gen.Load()
}

func (v *serviceDefaultsView) policy(service string) string {
	if v == nil {
		return ""
	}
	return (*v.policies.Load())[service]
}

// Generation implements lb.View: the service's own generation in the
// catalog, which no other service's change moves.
func (v lbView) Generation(service string) uint64 {
	return v.cat.ServiceGeneration(service) + v.defaults.generation()
}

// Instances implements lb.View.
func (v lbView) Instances(service string) []lb.Instance {
	var out []lb.Instance
	policy := v.defaults.policy(service)
	for _, in := range v.cat.Instances(service) {
		var weight int
		switch in.Status() {
		case gossip.StatusPassing:
			weight = in.Service.Weights.Passing
		case gossip.StatusWarning:
			weight = in.Service.Weights.Warning
		}
		if weight <= 0 || in.Service.Port == 0 {
			continue
		}
		host := in.Service.Address
		if host == "" {
			host = in.Node.Addr.String()
		}
		li := lb.Instance{
			ID:     in.Node.Name + "/" + in.Service.ID,
			Addr:   net.JoinHostPort(host, strconv.Itoa(in.Service.Port)),
			Weight: weight,
			Tags:   in.Service.Tags,
			Meta:   in.Service.Meta,
		}
		if policy != "" {
			// The cluster-wide service-defaults entry wins over the
			// instance's own Meta.lb_policy.
			li.Meta = maps.Clone(li.Meta)
			if li.Meta == nil {
				li.Meta = map[string]string{}
			}
			li.Meta["lb_policy"] = policy
		}
		if v.mesh && in.Node.Name != v.local {
			if li.Via = in.Node.RPCAddr(); li.Via == "" {
				continue // an agent that serves no mesh cannot be reached securely
			}
		}
		out = append(out, li)
	}
	return out
}

var _ lb.View = lbView{}
