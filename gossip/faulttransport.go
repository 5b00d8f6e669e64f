package gossip

import (
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipTransport binds memberlist's network transport itself and returns
// it wrapped to honour the faults (Network).
func (n *FaultNetwork) GossipTransport(name, bindAddr string, bindPort int) (memberlist.Transport, int, error) {
	tc := &memberlist.NetTransportConfig{
		BindAddrs: []string{bindAddr},
		BindPort:  bindPort,
		Logger:    log.New(io.Discard, "", 0),
	}
	// With port 0 the TCP port the kernel picks may be taken for UDP:
	// retry a few times, as memberlist does.
	tries := 1
	if bindPort == 0 {
		tries = 10
	}
	var nt *memberlist.NetTransport
	var err error
	for range tries {
		if nt, err = memberlist.NewNetTransport(tc); err == nil {
			break
		}
	}
	if err != nil {
		return nil, 0, err
	}
	port := nt.GetAutoBindPort()
	n.register(name, net.JoinHostPort(bindAddr, strconv.Itoa(port)))
	return newFaultTransport(n, name, nt), port, nil
}

// faultTransport is memberlist's network transport with the faults of a
// FaultNetwork applied to its packets and streams. It owns two forwarding
// goroutines, which Shutdown stops.
type faultTransport struct {
	inner   *memberlist.NetTransport
	network *FaultNetwork
	local   string

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	// closing makes the forwarders discard instead of handing over, so the
	// inner transport's listeners never block on a consumer that is gone;
	// stop then ends them.
	closing, stop chan struct{}
	wg            sync.WaitGroup
	shutdownOnce  sync.Once
}

func newFaultTransport(n *FaultNetwork, local string, inner *memberlist.NetTransport) *faultTransport {
	t := &faultTransport{
		inner:    inner,
		network:  n,
		local:    local,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		closing:  make(chan struct{}),
		stop:     make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *faultTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	deliver, delay := t.network.sendPacket(t.local, a.Addr)
	switch {
	case !deliver:
		return time.Now(), nil
	case delay > 0:
		buf := append([]byte(nil), b...)
		time.AfterFunc(delay, func() {
			// After Shutdown this fails on the closed socket: lost, as it
			// would be.
			_, _ = t.inner.WriteToAddress(buf, a)
		})
		return time.Now(), nil
	}
	return t.inner.WriteToAddress(b, a)
}

func (t *faultTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.network.dial(t.local, addr, timeout)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.network.dial(t.local, a.Addr, timeout)
}

func (t *faultTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown stops the inner transport first, while memberlist still drains
// the channels, then the forwarders. It is safe to call more than once.
func (t *faultTransport) Shutdown() error {
	var err error
	t.shutdownOnce.Do(func() {
		close(t.closing)
		err = t.inner.Shutdown()
		close(t.stop)
		t.wg.Wait()
	})
	return err
}

// forwardPackets hands memberlist the packets that may arrive here.
func (t *faultTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case <-t.stop:
			return
		case p := <-t.inner.PacketCh():
			if p.From != nil && !t.network.receivePacket(p.From.String(), t.local) {
				continue
			}
			select {
			case t.packetCh <- p:
			case <-t.closing:
			}
		}
	}
}

// forwardStreams hands memberlist the accepted streams, wrapped so that they
// fail once the link to the dialer is cut.
func (t *faultTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case <-t.stop:
			return
		case conn := <-t.inner.StreamCh():
			select {
			case t.streamCh <- t.network.accepted(t.local, conn):
			case <-t.closing:
				_ = conn.Close()
			}
		}
	}
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)
