package gossip

import (
	"context"
	"net"

	"github.com/hashicorp/memberlist"
)

// Network carries a Cluster's traffic: memberlist's gossip (packets and
// streams) and the node-to-node catalog path. It is the hook for tests and
// benchmarks that need a network of their own (faults injected, thousands
// of agents talking in memory in one process); a nil Config.Network is the
// host's sockets.
//
// Memberlist's Transport is the one library type that crosses this
// package's API, here only: it is memberlist's own plug-in point, and a
// Network that wraps it needs nothing less.
//
// Implementations must be safe for concurrent use. One Network may carry
// every member of an in-process cluster; it tells them apart by the member
// name each call is given.
type Network interface {
	// GossipTransport returns memberlist's transport for the member name,
	// bound to bindAddr and bindPort (0: any free port), and the port it
	// bound. The Cluster shuts the transport down.
	GossipTransport(name, bindAddr string, bindPort int) (memberlist.Transport, int, error)
	// Listen returns the listener of the member's catalog path, bound to
	// addr (host:port, port 0: any free port). The Cluster closes it.
	Listen(name, addr string) (net.Listener, error)
	// Dial opens a catalog stream from the member to addr, giving up when
	// ctx is done (its deadline is the dial timeout; it is also cancelled
	// when the Cluster shuts down). The caller closes the connection.
	Dial(ctx context.Context, name, addr string) (net.Conn, error)
}

// hostNetwork is the host's sockets: what a Cluster uses without a Network.
// Memberlist binds its own transport when GossipTransport returns nil.
type hostNetwork struct{}

func (hostNetwork) GossipTransport(string, string, int) (memberlist.Transport, int, error) {
	return nil, 0, nil
}

func (hostNetwork) Listen(_, addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

func (hostNetwork) Dial(ctx context.Context, _, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

var _ Network = hostNetwork{}
