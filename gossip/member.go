package gossip

import (
	"net"
	"strconv"
	"strings"
)

// MemberStatus is a member's state as failure detection sees it.
type MemberStatus int

// Member statuses. The numbers are serf's and Consul's, which
// /v1/agent/members reports as they are.
const (
	StatusNone MemberStatus = iota
	StatusAlive
	StatusLeaving
	StatusLeft
	StatusFailed
)

// String returns the status as a word ("alive", "failed", ...).
func (s MemberStatus) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusLeaving:
		return "leaving"
	case StatusLeft:
		return "left"
	case StatusFailed:
		return "failed"
	default:
		return "none"
	}
}

// Tag keys every Shoal agent publishes in its serf tags. They are kept short:
// serf allows 512 bytes of tags in all.
const (
	TagDatacenter = "dc"
	TagNodeID     = "id"
	TagVersion    = "v"   // catalog version, decimal
	TagFloor      = "f"   // catalog floor: where the owner's history begins
	TagRPC        = "rpc" // node-to-node catalog address, host:port
	TagHTTP       = "http"
	// The tags below are the ones Consul's tools read (consul members
	// prints them as Type, Build and Protocol).
	TagRole        = "role"  // "node": a client in Consul's terms
	TagBuild       = "build" // the agent's version, set by the agent
	TagProtocol    = "vsn"
	TagProtocolMin = "vsn_min"
	TagProtocolMax = "vsn_max"
	// TagMetaPrefix starts the tags that carry the node's meta (Consul's
	// NodeMeta): "m:rack" = "r1".
	TagMetaPrefix = "m:"
)

// Protocol is the version of the node-to-node catalog protocol, published
// in the vsn tags. Every Shoal agent so far speaks 1.
const Protocol = 1

// Member is one agent of the cluster.
type Member struct {
	Name   string
	Addr   net.IP
	Port   uint16
	Tags   map[string]string
	Status MemberStatus

	ProtocolMin, ProtocolMax, ProtocolCur uint8
	DelegateMin, DelegateMax, DelegateCur uint8

	// Index is the catalog index at which the member's record last changed
	// (status, address, tags), not counting its advertised catalog version,
	// which moves with every service change: Consul's node ModifyIndex.
	// Only members read from the Catalog have it; elsewhere it is 0.
	Index uint64
}

// Datacenter is the member's datacenter tag.
func (m Member) Datacenter() string { return m.Tags[TagDatacenter] }

// Meta is the member's node meta, from its TagMetaPrefix tags; never nil.
func (m Member) Meta() map[string]string {
	out := make(map[string]string)
	for k, v := range m.Tags {
		if key, ok := strings.CutPrefix(k, TagMetaPrefix); ok {
			out[key] = v
		}
	}
	return out
}

// NodeID is the member's stable node ID.
func (m Member) NodeID() string { return m.Tags[TagNodeID] }

// CatalogVersion is the catalog version the member last advertised.
func (m Member) CatalogVersion() uint64 {
	v, _ := strconv.ParseUint(m.Tags[TagVersion], 10, 64)
	return v
}

// CatalogFloor is the floor the member last advertised: a replica older
// than it belongs to a previous life of the member (a wiped data dir) and
// must not be shown.
func (m Member) CatalogFloor() uint64 {
	v, _ := strconv.ParseUint(m.Tags[TagFloor], 10, 64)
	return v
}

// RPCAddr is where the member serves catalog deltas.
func (m Member) RPCAddr() string { return m.Tags[TagRPC] }

// GossipAddr is the member's gossip address, host:port.
func (m Member) GossipAddr() string {
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}
