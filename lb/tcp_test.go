package lb

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoBackend is a line-echo TCP server: each line comes back prefixed with
// the backend's name, and when the client stops sending it says "NAME bye"
// and closes, so half-closes can be observed.
type echoBackend struct {
	name     string
	ln       net.Listener
	accepted atomic.Int64

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newEchoBackend(t testing.TB, name string) *echoBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{name: name, ln: ln, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.kill)
	return b
}

func (b *echoBackend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.accepted.Add(1)
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serve(c)
	}
}

func (b *echoBackend) serve(c net.Conn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if _, err := io.WriteString(c, b.name+" "+sc.Text()+"\n"); err != nil {
			return
		}
	}
	if sc.Err() == nil { // a clean EOF: the client half-closed
		io.WriteString(c, b.name+" bye\n")
	}
}

// kill closes the listener and every open connection, and waits.
func (b *echoBackend) kill() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *echoBackend) addr() string       { return b.ln.Addr().String() }
func (b *echoBackend) instance() Instance { return inst(b.name, b.addr()) }

// startUpstream starts a proxy with only a TCP upstream for "web".
func startUpstream(t testing.TB, cfg Config, v View) (*Proxy, string) {
	t.Helper()
	cfg.HTTPAddr = ""
	cfg.Upstreams = map[string]string{"web": "127.0.0.1:0"}
	p := startProxy(t, cfg, v)
	addr := p.UpstreamAddr("web")
	if addr == "" {
		t.Fatal("no upstream listener for web")
	}
	if p.HTTPAddr() != "" {
		t.Fatalf("HTTP listener %s though HTTPAddr is empty", p.HTTPAddr())
	}
	return p, addr
}

// echoOnce connects through the upstream, sends one line, and returns the
// name of the backend that answered.
func echoOnce(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	name, rest, ok := strings.Cut(strings.TrimSuffix(got, "\n"), " ")
	if !ok || rest != line {
		return "", errors.New("bad echo " + got)
	}
	return name, nil
}

func TestTCPUpstreamRoundRobin(t *testing.T) {
	v := newFakeView()
	bs := []*echoBackend{newEchoBackend(t, "a"), newEchoBackend(t, "b"), newEchoBackend(t, "c")}
	v.Set("web", bs[0].instance(), bs[1].instance(), bs[2].instance())
	cfg := testConfig()
	cfg.Policy = PolicyRoundRobin
	p, addr := startUpstream(t, cfg, v)

	per := map[string]int{}
	for range 30 {
		name, err := echoOnce(addr, "hello")
		if err != nil {
			t.Fatal(err)
		}
		per[name]++
	}
	for _, b := range bs {
		if per[b.name] != 10 {
			t.Errorf("backend %s got %d of 30 connections, want 10 (%v)", b.name, per[b.name], per)
		}
	}
	waitFor(t, 5*time.Second, "in-flight counts back to zero", func() bool {
		for _, e := range p.pool("web", "").current().all.eps {
			if e.inflight.Load() != 0 {
				return false
			}
		}
		return true
	})
	if st := p.Stats(); st.Connections != 30 || st.Errors != 0 {
		t.Errorf("stats = %+v, want 30 connections, no errors", st)
	}
}

func TestTCPUpstreamHalfClose(t *testing.T) {
	v := newFakeView()
	b := newEchoBackend(t, "a")
	v.Set("web", b.instance())
	_, addr := startUpstream(t, testConfig(), v)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "one\ntwo\n"); err != nil {
		t.Fatal(err)
	}
	// Stop sending; the backend must see EOF and may still answer.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading after half-close: %v (got %q)", err, got)
	}
	if want := "a one\na two\na bye\n"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestTCPUpstreamBackendKilled(t *testing.T) {
	v := newFakeView()
	bs := []*echoBackend{newEchoBackend(t, "a"), newEchoBackend(t, "b"), newEchoBackend(t, "c")}
	v.Set("web", bs[0].instance(), bs[1].instance(), bs[2].instance())
	cfg := testConfig()
	cfg.Policy = PolicyRoundRobin
	p, addr := startUpstream(t, cfg, v)

	// A long-lived connection that will be cut.
	long, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	long.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(long, "hi\n")
	line, err := bufio.NewReader(long).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	victim := bs[strings.Index("abc", line[:1])]
	victim.kill()
	// The proxy passes the backend's close on to the client.
	if _, err := io.ReadAll(long); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("long-lived connection ended with %v", err)
	}

	per := map[string]int{}
	for i := range 60 {
		name, err := echoOnce(addr, "x")
		if err != nil {
			t.Fatalf("connection %d failed after a backend died: %v", i, err)
		}
		per[name]++
	}
	if per[victim.name] != 0 {
		t.Fatalf("dead backend %s got %d connections", victim.name, per[victim.name])
	}
	for _, b := range bs {
		if b != victim && per[b.name] < 10 { // round robin scans past the dead one: about 2:1
			t.Errorf("backend %s got %d of 60 connections, want a fair share (%v)", b.name, per[b.name], per)
		}
	}
	if st := p.Stats(); st.Ejections < 1 {
		t.Errorf("dead backend not ejected: %+v", st)
	}
}

func TestTCPUpstreamNoInstances(t *testing.T) {
	v := newFakeView()
	p, addr := startUpstream(t, testConfig(), v)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("read = %d, %v: want the connection closed at once", n, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("closing took %v", d)
	}
	waitFor(t, time.Second, "error counted", func() bool { return p.Stats().Errors == 1 })
}

func TestTCPUpstreamShutdownDrains(t *testing.T) {
	v := newFakeView()
	b := newEchoBackend(t, "a")
	v.Set("web", b.instance())
	cfg := testConfig()
	cfg.ShutdownTimeout = 200 * time.Millisecond
	p, addr := startUpstream(t, cfg, v)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hi\n")
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// An idle long-lived connection outlives the grace period: Shutdown
	// closes it and returns.
	start := time.Now()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	if _, err := io.ReadAll(c); err != nil && isTimeout(err) {
		t.Fatal("connection still open after Shutdown")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("upstream still accepting after Shutdown")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestTCPUpstreamShutdownUnderLoad shuts the proxy down while clients keep
// connecting: Shutdown returns, every session ends, and (under -race) the
// session bookkeeping is sound.
func TestTCPUpstreamShutdownUnderLoad(t *testing.T) {
	v := newFakeView()
	b := newEchoBackend(t, "a")
	v.Set("web", b.instance())
	cfg := testConfig()
	cfg.ShutdownTimeout = time.Second
	p, addr := startUpstream(t, cfg, v)

	stop := make(chan struct{})
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := echoOnce(addr, "x"); err == nil {
					ok.Add(1)
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, "some sessions", func() bool { return ok.Load() >= 20 })
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown hung under load")
	}
	close(stop)
	wg.Wait()
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("upstream accepting after Shutdown")
	}
}
