package lb

import "time"

// Instance is one service instance that may take traffic.
type Instance struct {
	// ID identifies the instance across view refreshes (node + service ID).
	ID string
	// Addr is where to connect, host:port.
	Addr string
	// Weight is the instance's relative share of traffic, at least 1.
	Weight int
	// Tags are the instance's tags, for TAG.NAME routing.
	Tags []string
	// Via, when set, is the address of the agent of the node that hosts
	// the instance, which the proxy reaches through Config.Mesh: the
	// instance is on another node and traffic to it crosses the mesh hop.
	Via string
	// Meta is the instance's metadata; "lb_policy" and "lb_hash_key" choose
	// the balancing policy of the service.
	Meta map[string]string
	// Subsets names the resolver subsets of the service the instance is in
	// (Target.Subset).
	Subsets []string
	// Node is the name of the instance's node, for distances
	// (Config.Distances); Zone is that node's zone, "" if it has none.
	Node, Zone string
}

// View is the proxy's window on the catalog.
//
// Generation returns a number that changes whenever the instances of the
// service change, and only then, so that a change to one service never
// rebuilds another's pool. It must be cheap (a map read, an atomic load):
// the proxy calls it on every request and calls Instances only when it
// moved. Instances returns the instances of a service that may take
// traffic now: passing or warning, not in maintenance, on a live node; it
// should cost in proportion to that service's instances, not to the whole
// catalog. Both must be safe for concurrent use and must never block; the
// returned slice is owned by the proxy.
type View interface {
	Generation(service string) uint64
	Instances(service string) []Instance
}

// Distances estimates round-trip times from this node to others.
type Distances interface {
	// RTTs returns the estimated round-trip time to every node there is an
	// estimate for, by node name. The proxy calls it about once a second,
	// off the request path; the map is the proxy's.
	RTTs() map[string]time.Duration
}
