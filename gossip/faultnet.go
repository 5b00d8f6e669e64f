package gossip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"
)

// FaultNetwork is a helper for tests: a Network for in-process test
// clusters that can
// partition, drop, lose, delay and black-hole the traffic between members.
// Every member of the test cluster shares one through Config.Network; it
// then carries both memberlist's gossip (UDP packets and TCP streams) and
// the node-to-node catalog path, so one fault cuts failure detection and
// replication alike.
//
// Members are named by node name or by an address (host:port) of their
// gossip or catalog listener, which resolves to the node that bound it.
//
// A packet crossing a cut link is lost silently, as UDP would lose it. A
// stream needs both directions, so it fails when either direction is cut:
// a dial is refused at once (as an unreachable host refuses it, rather than
// timing out), and a connection already open fails on its next read or
// write. Cuts are checked where traffic leaves a member and again where it
// arrives; loss and delay apply once, on the way out.
//
// A black hole (BlackHole) is the other way a link goes dark: what crosses
// it vanishes without an answer, as when a host's packets are dropped by a
// firewall or its cable is pulled. Packets are lost; a dial hangs until the
// link comes back or its timeout passes; a connection already open hangs on
// its next read or write until the link comes back or its deadline
// passes. Nothing is refused: the caller learns only by timing out.
//
// Methods are safe for concurrent use.
type FaultNetwork struct {
	mu sync.RWMutex // guards the fields below
	// cuts are the directed links that carry nothing, as the caller named
	// their ends (node names or addresses); see cutLocked.
	cuts map[link]struct{}
	// holes are the directed links that black-hole their traffic.
	holes map[link]struct{}
	// owners maps the addresses members bound or advertise to their names.
	owners map[string]string
	// dialers maps the local address of every open stream dialed through
	// the network to the dialing member, so that the accepting side can
	// tell who is calling.
	dialers map[string]string
	loss    float64
	delay   time.Duration
}

// link is one direction between two members.
type link struct{ from, to string }

// errLinkCut is the error of streams across a cut link.
var errLinkCut = errors.New("network is unreachable (fault injected)")

// NewFaultNetwork returns a network that delivers everything, until told
// otherwise.
func NewFaultNetwork() *FaultNetwork {
	return &FaultNetwork{
		cuts:    make(map[link]struct{}),
		holes:   make(map[link]struct{}),
		owners:  make(map[string]string),
		dialers: make(map[string]string),
	}
}

// Partition cuts every link between a member of groupA and a member of
// groupB, in both directions. Links within each group are untouched, and so
// are members in neither group. Partitions and drops add up until Heal.
func (n *FaultNetwork) Partition(groupA, groupB []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range groupA {
		for _, b := range groupB {
			n.cuts[link{a, b}] = struct{}{}
			n.cuts[link{b, a}] = struct{}{}
		}
	}
}

// BlackHole makes every link between a member of groupA and a member of
// groupB swallow its traffic, in both directions: packets are lost, and
// streams hang (see FaultNetwork) instead of failing. Heal ends it.
func (n *FaultNetwork) BlackHole(groupA, groupB []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range groupA {
		for _, b := range groupB {
			n.holes[link{a, b}] = struct{}{}
			n.holes[link{b, a}] = struct{}{}
		}
	}
}

// Drop cuts one direction: packets from → to are lost, while to → from still
// arrive. Streams between the two fail either way, as TCP does when only one
// direction is lost.
func (n *FaultNetwork) Drop(from, to string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cuts[link{from, to}] = struct{}{}
}

// Loss makes every packet that would be delivered get lost with probability
// p (0 to 1). Streams are reliable, as TCP makes them, and are not affected.
func (n *FaultNetwork) Loss(p float64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.loss = min(max(p, 0), 1)
}

// Delay holds every delivered packet, and every new stream's connect, for d.
func (n *FaultNetwork) Delay(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delay = max(d, 0)
}

// Heal removes every partition, drop, black hole, loss and delay.
func (n *FaultNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cuts)
	clear(n.holes)
	n.loss, n.delay = 0, 0
}

// Reachable reports whether traffic from → to is delivered, loss aside.
// Either end may be a node name or an address.
func (n *FaultNetwork) Reachable(from, to string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	from, to = n.nameLocked(from), n.nameLocked(to)
	return !n.cutLocked(from, to) && !n.inLocked(n.holes, from, to)
}

// register records the addresses a member bound or advertises.
func (n *FaultNetwork) register(name string, addrs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range addrs {
		n.owners[a] = name
	}
}

// nameLocked resolves an address to the member that owns it; anything else
// (a name, an unknown address) is returned as it is.
func (n *FaultNetwork) nameLocked(endpoint string) string {
	if name, ok := n.owners[endpoint]; ok {
		return name
	}
	return endpoint
}

// cutLocked reports whether the link between two resolved members is cut.
// Cuts are kept as the caller named them and resolved here, so that a test
// may cut a member by address before it has started.
func (n *FaultNetwork) cutLocked(from, to string) bool {
	return n.inLocked(n.cuts, from, to)
}

// inLocked reports whether the link between two resolved members is in
// links (cuts or holes).
func (n *FaultNetwork) inLocked(links map[link]struct{}, from, to string) bool {
	for c := range links {
		if n.nameLocked(c.from) == from && n.nameLocked(c.to) == to {
			return true
		}
	}
	return false
}

// sendPacket decides the fate of a packet from the member local to addr:
// whether it is delivered, and after how long.
func (n *FaultNetwork) sendPacket(local, addr string) (deliver bool, delay time.Duration) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if to := n.nameLocked(addr); n.cutLocked(local, to) || n.inLocked(n.holes, local, to) {
		return false, 0
	}
	if n.loss > 0 && rand.Float64() < n.loss {
		return false, 0
	}
	return true, n.delay
}

// receivePacket reports whether a packet from addr may reach the member local.
func (n *FaultNetwork) receivePacket(addr, local string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	from := n.nameLocked(addr)
	return !n.cutLocked(from, local) && !n.inLocked(n.holes, from, local)
}

// streamState is what a stream between two resolved members does now.
type streamState int

const (
	streamOK   streamState = iota // carries data
	streamCut                     // fails at once
	streamHole                    // hangs
)

// stream reports the state of a stream between two resolved members: it
// needs both directions, so a cut or a hole either way stops it.
func (n *FaultNetwork) stream(a, b string) streamState {
	n.mu.RLock()
	defer n.mu.RUnlock()
	switch {
	case n.cutLocked(a, b) || n.cutLocked(b, a):
		return streamCut
	case n.inLocked(n.holes, a, b) || n.inLocked(n.holes, b, a):
		return streamHole
	}
	return streamOK
}

// streamOK reports whether a stream between two resolved members works.
func (n *FaultNetwork) streamOK(a, b string) bool { return n.stream(a, b) == streamOK }

// holePoll is how often a stream hanging in a black hole looks again.
const holePoll = 5 * time.Millisecond

// errHoleTimeout is what a dial into a black hole returns when it gives up.
var errHoleTimeout = errors.New("i/o timeout (black hole)")

// Listen binds a catalog listener of the member local whose connections
// honour the faults (Network).
func (n *FaultNetwork) Listen(local, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return n.listen(local, ln, ln.Addr().String()), nil
}

// Dial opens a catalog stream from the member local (Network).
func (n *FaultNetwork) Dial(ctx context.Context, local, addr string) (net.Conn, error) {
	timeout := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return n.dialCtx(ctx, local, addr, timeout)
}

// dial opens a stream from the member local to addr.
func (n *FaultNetwork) dial(local, addr string, timeout time.Duration) (net.Conn, error) {
	return n.dialCtx(context.Background(), local, addr, timeout)
}

// dialCtx is dial that also gives up when ctx is done.
func (n *FaultNetwork) dialCtx(ctx context.Context, local, addr string, timeout time.Duration) (net.Conn, error) {
	n.mu.RLock()
	peer, delay := n.nameLocked(addr), n.delay
	n.mu.RUnlock()
	if delay > 0 {
		if delay >= timeout {
			time.Sleep(timeout)
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout (fault injected)")}
		}
		time.Sleep(delay)
		timeout -= delay
	}
	// A dial into a black hole waits for the link as TCP retransmits its
	// SYN: it connects if the hole closes in time, else it times out.
	giveUp := time.Now().Add(timeout)
	for n.stream(local, peer) == streamHole {
		if err := ctx.Err(); err != nil {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
		}
		if !time.Now().Before(giveUp) {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%s → %s: %w", local, peer, errHoleTimeout)}
		}
		time.Sleep(min(holePoll, time.Until(giveUp)))
	}
	timeout = max(time.Until(giveUp), time.Millisecond)
	if !n.streamOK(local, peer) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%s → %s: %w", local, peer, errLinkCut)}
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	key := conn.LocalAddr().String()
	n.mu.Lock()
	n.dialers[key] = local
	n.mu.Unlock()
	return &faultConn{Conn: conn, network: n, local: local, peer: peer, dialerKey: key}, nil
}

// listen wraps a stream listener of the member local, which peers reach at
// advertised, so that accepted connections honour the faults.
func (n *FaultNetwork) listen(local string, ln net.Listener, advertised string) net.Listener {
	n.register(local, ln.Addr().String(), advertised)
	return &faultListener{Listener: ln, network: n, local: local}
}

// accepted wraps a stream the member local accepted.
func (n *FaultNetwork) accepted(local string, conn net.Conn) net.Conn {
	return &faultConn{Conn: conn, network: n, local: local}
}

// faultListener hands out accepted connections that honour the faults.
type faultListener struct {
	net.Listener
	network *FaultNetwork
	local   string
}

func (l *faultListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.network.accepted(l.local, conn), nil
}

// faultConn is one end of a stream through a FaultNetwork. Before every read
// and write, and after every read, it checks that the link to the peer still
// works; once it is cut, the connection is closed for good, and while it is
// black-holed, the read or write hangs until the link comes back, the
// deadline passes or the connection is closed.
type faultConn struct {
	net.Conn
	network *FaultNetwork
	local   string
	// dialerKey is the dialers entry to drop on Close; empty on the
	// accepting side.
	dialerKey string

	mu     sync.Mutex // guards the fields below
	peer   string     // the remote member; "" until the accepting side knows it
	rdl    time.Time  // read deadline
	wdl    time.Time  // write deadline
	closed bool
}

func (c *faultConn) Read(p []byte) (int, error) {
	if err := c.check("read"); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		// The data may have been in flight when the link went dark.
		if err := c.check("read"); err != nil {
			return 0, err
		}
	}
	return n, err
}

func (c *faultConn) Write(p []byte) (int, error) {
	if err := c.check("write"); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *faultConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.rdl, c.wdl = t, t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *faultConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.rdl = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *faultConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *faultConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if c.dialerKey != "" {
		c.network.mu.Lock()
		if c.network.dialers[c.dialerKey] == c.local {
			delete(c.network.dialers, c.dialerKey)
		}
		c.network.mu.Unlock()
	}
	return c.Conn.Close()
}

// check fails, and closes the connection, when the link to the peer is
// cut; it waits while the link is black-holed, failing as the real
// connection would once its deadline passes or it is closed.
func (c *faultConn) check(op string) error {
	peer := c.remote()
	if peer == "" {
		return nil
	}
	for {
		switch c.network.stream(c.local, peer) {
		case streamOK:
			return nil
		case streamCut:
			_ = c.Conn.Close()
			return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(),
				Err: fmt.Errorf("%s ↔ %s: %w", c.local, peer, errLinkCut)}
		}
		c.mu.Lock()
		deadline, closed := c.rdl, c.closed
		if op == "write" {
			deadline = c.wdl
		}
		c.mu.Unlock()
		switch {
		case closed:
			return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: net.ErrClosed}
		case !deadline.IsZero() && !time.Now().Before(deadline):
			return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
		}
		time.Sleep(holePoll)
	}
}

// remote returns the peer's name. On the accepting side it is learnt from
// the dialer's entry, which exists from before the dialer's first write, so
// it is known by the time anything has been read.
func (c *faultConn) remote() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peer == "" {
		c.network.mu.RLock()
		c.peer = c.network.dialers[c.RemoteAddr().String()]
		c.network.mu.RUnlock()
	}
	return c.peer
}
