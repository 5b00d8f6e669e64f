package gossip

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// fnListen starts a catalog-style listener for member name that accepts
// streams and echoes what it reads, until the test ends.
func fnListen(t *testing.T, n *FaultNetwork, name string) string {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := n.listen(name, raw, raw.Addr().String())
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	return raw.Addr().String()
}

// fnRoundTrip dials addr as from, writes a byte and reads the echo.
func fnRoundTrip(n *FaultNetwork, from, addr string) error {
	conn, err := n.dial(from, addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fnEcho(conn)
}

func fnEcho(conn net.Conn) error {
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte{42}); err != nil {
		return err
	}
	var b [1]byte
	_, err := io.ReadFull(conn, b[:])
	return err
}

// fnTransport binds a memberlist transport for member name through n.
func fnTransport(t *testing.T, n *FaultNetwork, name string) (*faultTransport, string) {
	t.Helper()
	tr, port, err := n.GossipTransport(name, "127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	ft := tr.(*faultTransport)
	t.Cleanup(func() { ft.Shutdown() })
	if ip, got, err := ft.FinalAdvertiseAddr("127.0.0.1", port); err != nil || got != port || port == 0 {
		t.Fatalf("FinalAdvertiseAddr = %v, %d, %v; want the bound port %d", ip, got, err, port)
	}
	return ft, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// fnReceives reports whether tr receives payload within window.
func fnReceives(tr *faultTransport, payload string, window time.Duration) bool {
	deadline := time.After(window)
	for {
		select {
		case p := <-tr.PacketCh():
			if string(p.Buf) == payload {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func TestFaultNetworkPartitionCutsStreamsBothWays(t *testing.T) {
	n := NewFaultNetwork()
	addrA, addrB, addrC := fnListen(t, n, "a"), fnListen(t, n, "b"), fnListen(t, n, "c")

	for _, p := range [][2]string{{"a", addrB}, {"b", addrA}, {"c", addrA}} {
		if err := fnRoundTrip(n, p[0], p[1]); err != nil {
			t.Fatalf("%s → %s before the partition: %v", p[0], p[1], err)
		}
	}
	open, err := n.dial("a", addrB, time.Second) // stays open across the partition
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	n.Partition([]string{"a"}, []string{"b"})
	for _, p := range [][2]string{{"a", addrB}, {"b", addrA}} {
		if err := fnRoundTrip(n, p[0], p[1]); !errors.Is(err, errLinkCut) {
			t.Errorf("%s → %s across the partition: err %v, want a cut link", p[0], p[1], err)
		}
	}
	if err := fnEcho(open); !errors.Is(err, errLinkCut) {
		t.Errorf("open stream across the partition: err %v, want a cut link", err)
	}
	for _, p := range [][2]string{{"a", addrC}, {"c", addrB}} {
		if err := fnRoundTrip(n, p[0], p[1]); err != nil {
			t.Errorf("%s → %s outside the partition: %v", p[0], p[1], err)
		}
	}
	if n.Reachable("a", "b") || n.Reachable(addrB, "a") || !n.Reachable("a", addrC) {
		t.Errorf("Reachable disagrees with the partition")
	}

	n.Heal()
	for _, p := range [][2]string{{"a", addrB}, {"b", addrA}} {
		if err := fnRoundTrip(n, p[0], p[1]); err != nil {
			t.Errorf("%s → %s after heal: %v", p[0], p[1], err)
		}
	}
}

func TestFaultNetworkCutsAcceptedStreams(t *testing.T) {
	n := NewFaultNetwork()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := n.listen("b", raw, raw.Addr().String())
	defer ln.Close()
	client, err := n.dial("a", raw.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if _, err := client.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := server.Read(b[:]); err != nil {
		t.Fatalf("accepted side before the cut: %v", err)
	}

	// The accepting side knows its dialer: cutting by name reaches it.
	n.Drop("b", "a")
	if _, err := server.Write([]byte{2}); !errors.Is(err, errLinkCut) {
		t.Errorf("accepted side after the cut: err %v, want a cut link", err)
	}
}

func TestFaultNetworkDropIsOneWayForPackets(t *testing.T) {
	n := NewFaultNetwork()
	a, addrA := fnTransport(t, n, "a")
	b, addrB := fnTransport(t, n, "b")

	n.Drop("a", "b")
	if _, err := a.WriteTo([]byte("a→b"), addrB); err != nil {
		t.Fatal(err)
	}
	if fnReceives(b, "a→b", 300*time.Millisecond) {
		t.Errorf("a packet crossed a dropped direction")
	}
	if _, err := b.WriteTo([]byte("b→a"), addrA); err != nil {
		t.Fatal(err)
	}
	if !fnReceives(a, "b→a", 5*time.Second) {
		t.Errorf("a packet in the open direction was lost")
	}
	// A stream needs both directions, whoever dials.
	if _, err := a.DialTimeout(addrB, time.Second); !errors.Is(err, errLinkCut) {
		t.Errorf("dial a → b: err %v, want a cut link", err)
	}
	if _, err := b.DialTimeout(addrA, time.Second); !errors.Is(err, errLinkCut) {
		t.Errorf("dial b → a: err %v, want a cut link", err)
	}

	n.Heal()
	if _, err := a.WriteTo([]byte("healed"), addrB); err != nil {
		t.Fatal(err)
	}
	if !fnReceives(b, "healed", 5*time.Second) {
		t.Errorf("a packet was lost after heal")
	}
	conn, err := a.DialTimeout(addrB, time.Second)
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	conn.Close()
}

// A fault is also checked where a packet arrives, so a sender that bypasses
// the network is cut too.
func TestFaultNetworkFiltersArrivingPackets(t *testing.T) {
	n := NewFaultNetwork()
	b, addrB := fnTransport(t, n, "b")
	raw, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	n.register("x", raw.LocalAddr().String())
	to, _ := net.ResolveUDPAddr("udp", addrB)

	n.Partition([]string{"x"}, []string{"b"})
	if _, err := raw.WriteTo([]byte("cut"), to); err != nil {
		t.Fatal(err)
	}
	if fnReceives(b, "cut", 300*time.Millisecond) {
		t.Errorf("a packet from a partitioned sender arrived")
	}
	n.Heal()
	if _, err := raw.WriteTo([]byte("open"), to); err != nil {
		t.Fatal(err)
	}
	if !fnReceives(b, "open", 5*time.Second) {
		t.Errorf("a packet from a healed sender was lost")
	}
}

func TestFaultNetworkLossAndDelay(t *testing.T) {
	n := NewFaultNetwork()
	a, _ := fnTransport(t, n, "a")
	b, addrB := fnTransport(t, n, "b")

	n.Loss(1)
	if _, err := a.WriteTo([]byte("lost"), addrB); err != nil {
		t.Fatal(err)
	}
	if fnReceives(b, "lost", 300*time.Millisecond) {
		t.Errorf("a packet survived a loss of 1")
	}

	n.Heal()
	const delay = 200 * time.Millisecond
	n.Delay(delay)
	start := time.Now()
	if _, err := a.WriteTo([]byte("late"), addrB); err != nil {
		t.Fatal(err)
	}
	if !fnReceives(b, "late", 5*time.Second) {
		t.Fatalf("a delayed packet was lost")
	}
	if got := time.Since(start); got < delay {
		t.Errorf("a packet delayed by %v arrived after %v", delay, got)
	}
	start = time.Now()
	conn, err := a.DialTimeout(addrB, time.Second)
	if err != nil {
		t.Fatalf("delayed dial: %v", err)
	}
	conn.Close()
	if got := time.Since(start); got < delay {
		t.Errorf("a connect delayed by %v took %v", delay, got)
	}
	if _, err := a.DialTimeout(addrB, delay/2); err == nil {
		t.Errorf("a connect delayed past its timeout succeeded")
	}
}

func TestFaultNetworkCutByAddress(t *testing.T) {
	n := NewFaultNetwork()
	addrA, addrB := fnListen(t, n, "a"), fnListen(t, n, "b")
	n.Partition([]string{addrA}, []string{addrB})
	if err := fnRoundTrip(n, "a", addrB); !errors.Is(err, errLinkCut) {
		t.Errorf("a → b, cut by address: err %v, want a cut link", err)
	}
	if n.Reachable("b", "a") {
		t.Errorf("b reaches a across a partition by address")
	}
}

func TestHostNetworkIsTheRealNetwork(t *testing.T) {
	var n Network = hostNetwork{}
	ln, err := n.Listen("a", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, ok := ln.(*net.TCPListener); !ok {
		t.Errorf("the host network listened with a %T, want *net.TCPListener", ln)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := n.Dial(ctx, "b", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, ok := conn.(*net.TCPConn); !ok {
		t.Errorf("the host network dialed a %T, want *net.TCPConn", conn)
	}
	if tr, _, err := n.GossipTransport("a", "127.0.0.1", 0); err != nil || tr != nil {
		t.Errorf("the host network made a gossip transport (%v): memberlist must bind its own", err)
	}
}

func TestFaultNetworkBlackHoleHangsInsteadOfRefusing(t *testing.T) {
	n := NewFaultNetwork()
	a, _ := fnTransport(t, n, "a")
	b, addrB := fnTransport(t, n, "b")
	addrBC := fnListen(t, n, "b")
	open, err := n.dial("a", addrBC, time.Second) // stays open into the hole
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	n.BlackHole([]string{"a"}, []string{"b"})
	if n.Reachable("a", "b") || n.Reachable("b", "a") {
		t.Errorf("Reachable across a black hole")
	}
	if _, err := a.WriteTo([]byte("swallowed"), addrB); err != nil {
		t.Fatal(err)
	}
	if fnReceives(b, "swallowed", 300*time.Millisecond) {
		t.Errorf("a packet crossed a black hole")
	}
	const timeout = 300 * time.Millisecond
	start := time.Now()
	_, err = n.dial("a", addrBC, timeout)
	if took := time.Since(start); err == nil || errors.Is(err, errLinkCut) || took < timeout {
		t.Errorf("dial into a black hole: err %v after %v, want a timeout after %v", err, took, timeout)
	}
	start = time.Now()
	err = fnEcho(open) // its deadline is a second away
	if took := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || took < 900*time.Millisecond {
		t.Errorf("open stream into a black hole: err %v after %v, want its deadline", err, took)
	}

	// A dial that starts in the hole connects once the hole closes.
	go func() {
		time.Sleep(200 * time.Millisecond)
		n.Heal()
	}()
	start = time.Now()
	if err := fnRoundTrip(n, "a", addrBC); err != nil {
		t.Errorf("dial through a black hole that closed in time: %v", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("dial into a black hole returned after %v, before the hole closed", took)
	}
}
