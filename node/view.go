package node

import (
	"net"
	"strconv"

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
}

// Generation implements lb.View: the service's own generation in the
// catalog, which no other service's change moves.
func (v lbView) Generation(service string) uint64 { return v.cat.ServiceGeneration(service) }

// Instances implements lb.View.
func (v lbView) Instances(service string) []lb.Instance {
	var out []lb.Instance
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
