package node

import (
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
)

// lbView shows the proxy the instances of the replicated catalog that may
// take traffic: passing ones with their passing weight, warning ones with
// their warning weight (0 takes them out), none that are critical, in
// maintenance, or on a node that is not alive. Each instance carries its
// node's zone and the resolver subsets it is in.
type lbView struct {
	cat *gossip.Catalog
	// With mesh, instances of nodes other than local are reached through
	// their agents (lb.Instance.Via).
	local string
	mesh  bool
	// traffic holds the resolvers' subsets; nil: none.
	traffic *traffic
}

// tagZone is the serf tag that carries a node's zone (--zone).
const tagZone = "zone"

// Generation implements lb.View: the service's own generation in the
// catalog, which no other service's change moves, plus the traffic
// policy's, which moves the subsets.
func (v lbView) Generation(service string) uint64 {
	return v.cat.ServiceGeneration(service) + v.traffic.generation()
}

// Instances implements lb.View.
func (v lbView) Instances(service string) []lb.Instance {
	var out []lb.Instance
	subsets := v.traffic.subsets(service)
	for _, in := range v.cat.Instances(service) {
		var weight int
		status := in.Status()
		switch status {
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
			Node:   in.Node.Name,
			Zone:   in.Node.Tags[tagZone],
		}
		if len(subsets) > 0 {
			entry := ServiceEntry{
				Node:    catalogNode(in.Node),
				Service: agentService(in.Service, in.Node.Datacenter(), in.Version),
				Checks:  instanceChecks(in),
			}
			for _, sub := range subsets {
				if (!sub.onlyPassing || status == gossip.StatusPassing) && sub.filter.match(entry) {
					li.Subsets = append(li.Subsets, sub.name)
				}
			}
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

// coordinateDistances estimates round-trip times to other nodes from the
// network coordinates serf keeps (Vivaldi, fed by failure-detection
// probes): no traffic of its own.
type coordinateDistances struct {
	cluster *gossip.Cluster
	self    string
	// started is set once the cluster runs: the proxy starts first.
	started *atomic.Bool
}

// RTTs implements lb.Distances.
func (d coordinateDistances) RTTs() map[string]time.Duration {
	if !d.started.Load() {
		return nil
	}
	coords := d.cluster.Coordinates()
	own, ok := coords[d.self]
	if !ok {
		return nil
	}
	out := make(map[string]time.Duration, len(coords))
	for name, c := range coords {
		if rtt, err := own.DistanceTo(c); err == nil && rtt > 0 {
			out[name] = rtt
		}
	}
	return out
}

var _ lb.Distances = coordinateDistances{}
