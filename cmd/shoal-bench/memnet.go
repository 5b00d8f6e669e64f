package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/shoal-mesh/shoal/gossip"
)

// memNetwork is a gossip.Network that carries the traffic of agents in
// this process through memory, so that thousands of them fit on two cores:
// no socket, no system call. Packets are delivered to a bounded queue and
// dropped when it is full, as UDP drops them; streams are synchronous
// pipes (net.Pipe), with deadlines. Addresses are 127.0.0.1 and a port the
// network hands out.
//
// A black-holed agent (blackHole) is what a host whose packets a firewall
// drops looks like: its packets vanish both ways, dials to or from it hang
// until their timeout.
type memNetwork struct {
	mu        sync.RWMutex // guards the fields below
	port      int
	gossip    map[string]*memTransport // by address
	listeners map[string]*memListener  // by address
	names     map[string]string        // address → agent name
	holes     map[string]bool          // black-holed agents by name
}

func newMemNetwork() *memNetwork {
	return &memNetwork{port: 10000, gossip: make(map[string]*memTransport),
		listeners: make(map[string]*memListener), names: make(map[string]string), holes: make(map[string]bool)}
}

// memPacketQueue is the depth of an agent's packet queue.
const memPacketQueue = 4096

// nextAddrLocked hands out the next free address. Call with mu held.
func (n *memNetwork) nextAddrLocked() *net.TCPAddr {
	n.port++
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: n.port}
}

// blackHole makes an agent's traffic vanish, both ways.
func (n *memNetwork) blackHole(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.holes[name] = true
}

// dark reports whether traffic between agent from and address to vanishes.
func (n *memNetwork) dark(from, to string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.holes[from] || n.holes[n.names[to]]
}

func (n *memNetwork) GossipTransport(name, _ string, _ int) (memberlist.Transport, int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	addr := n.nextAddrLocked()
	t := &memTransport{net: n, name: name, addr: addr,
		packets: make(chan *memberlist.Packet, memPacketQueue), streams: make(chan net.Conn, 64), closed: make(chan struct{})}
	n.gossip[addr.String()] = t
	n.names[addr.String()] = name
	return t, addr.Port, nil
}

func (n *memNetwork) Listen(name, _ string) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	addr := n.nextAddrLocked()
	l := &memListener{net: n, addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
	n.listeners[addr.String()] = l
	n.names[addr.String()] = name
	return l, nil
}

func (n *memNetwork) Dial(ctx context.Context, name, addr string) (net.Conn, error) {
	if n.dark(name, addr) {
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%s: black hole: %w", addr, ctx.Err())}
	}
	n.mu.RLock()
	l := n.listeners[addr]
	n.mu.RUnlock()
	if l == nil {
		return nil, errRefused
	}
	return pipeTo(ctx, l.conns, l.closed)
}

// errRefused is a dial to an address nobody listens on, or that stopped.
var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}

// pipeTo connects a synchronous pipe to the side that accepts from
// accept: the dialler's end once it is taken, errRefused if that side
// closes or ctx ends first.
func pipeTo(ctx context.Context, accept chan<- net.Conn, closed <-chan struct{}) (net.Conn, error) {
	mine, theirs := net.Pipe()
	select {
	case accept <- theirs:
		return mine, nil
	case <-closed:
	case <-ctx.Done():
	}
	mine.Close()
	theirs.Close()
	return nil, errRefused
}

// memListener is an agent's catalog listener.
type memListener struct {
	net       *memNetwork
	addr      *net.TCPAddr
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.net.mu.Lock()
		delete(l.net.listeners, l.addr.String())
		l.net.mu.Unlock()
	})
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

// memTransport is an agent's memberlist transport.
type memTransport struct {
	net       *memNetwork
	name      string
	addr      *net.TCPAddr
	packets   chan *memberlist.Packet
	streams   chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func (t *memTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.addr.IP, t.addr.Port, nil
}

func (t *memTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	if t.net.dark(t.name, addr) {
		return now, nil
	}
	t.net.mu.RLock()
	dest := t.net.gossip[addr]
	t.net.mu.RUnlock()
	if dest == nil {
		return now, nil // a host that is gone: the packet is lost
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: &net.UDPAddr{IP: t.addr.IP, Port: t.addr.Port}, Timestamp: now}
	select {
	case dest.packets <- p:
	default: // the queue is full: dropped, as UDP would
	}
	return now, nil
}

func (t *memTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *memTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if t.net.dark(t.name, addr) {
		select {
		case <-ctx.Done():
		case <-t.closed:
		}
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("i/o timeout (black hole)")}
	}
	t.net.mu.RLock()
	dest := t.net.gossip[addr]
	t.net.mu.RUnlock()
	if dest == nil {
		return nil, errRefused
	}
	return pipeTo(ctx, dest.streams, dest.closed)
}

func (t *memTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *memTransport) Shutdown() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		t.net.mu.Lock()
		delete(t.net.gossip, t.addr.String())
		t.net.mu.Unlock()
	})
	return nil
}

var (
	_ gossip.Network       = (*memNetwork)(nil)
	_ memberlist.Transport = (*memTransport)(nil)
)
