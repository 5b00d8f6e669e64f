package lb

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// blackholeAddr returns a loopback address whose connects neither succeed
// nor fail until they time out, as to a host that was cut off: a listener
// with an accept queue of one that never accepts, filled up. Linux drops
// the SYNs of a full accept queue silently.
func blackholeAddr(t testing.TB) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("a black-holing listener needs Linux's accept-queue behaviour")
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue until a connect hangs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			if isNetTimeout(err) {
				return addr
			}
			t.Fatalf("filling the accept queue of %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Fatalf("%s still accepts connects after %d: cannot black-hole it", addr, i)
		}
	}
}

// TestClassifyDialTimeout: package net's dial timeout also matches
// context.DeadlineExceeded; it must still read as a failed connect that is
// retried elsewhere, for free, and not as the caller giving up.
func TestClassifyDialTimeout(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	var d net.Dialer
	_, err := d.DialContext(ctx, "tcp", "127.0.0.1:1")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial with a past deadline: %v, want an error matching context.DeadlineExceeded", err)
	}
	f := classify(&dialError{err})
	if want := (failure{dial: true, unsent: true, timeout: true, free: true}); f != want {
		t.Fatalf("classify(dial timeout) = %+v, want %+v", f, want)
	}
	if f := classify(context.Canceled); !f.final {
		t.Fatalf("classify(context.Canceled) = %+v: the caller went away, want final", f)
	}
	if f := classify(context.DeadlineExceeded); !f.final {
		t.Fatalf("classify(context.DeadlineExceeded) = %+v: the caller is out of time, want final", f)
	}
}

// blackholeConfig: short connects, no retry budget, so only the rule that
// a failed connect is always retried elsewhere lets requests through.
func blackholeConfig() Config {
	cfg := roundRobinConfig()
	cfg.ConnectTimeout = 100 * time.Millisecond
	cfg.EjectAfterErrors = 0 // every request meets the black hole in turn
	cfg.RetryBudget = 0
	cfg.MinRetriesPerSecond = 0
	return cfg
}

// TestProxyConnectTimeoutRetriedElsewhere: a request whose connect times out
// (an instance on a host that was cut off) goes to another instance, on
// HTTP/1.1 and h2c. (The netns "cut host under load" scenario found that
// one did not.)
func TestProxyConnectTimeoutRetriedElsewhere(t *testing.T) {
	v := newFakeView()
	ok := newBackend(t, "ok")
	v.Set("web", inst("hole", blackholeAddr(t)), ok.instance())
	p := startProxy(t, blackholeConfig(), v)

	pc := newProxyClient(t, p)
	for i := range 6 {
		if status, body := pc.get(t, "web", "/"); status != http.StatusOK || body != "ok" {
			t.Fatalf("HTTP/1.1 request %d: %d %q, want 200 from the live instance", i, status, body)
		}
	}
	h2 := h2cClient(t, p)
	for i := range 6 {
		req, _ := http.NewRequest(http.MethodGet, "http://web/", nil)
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatalf("h2c request %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("h2c request %d: %d, want 200 from the live instance", i, resp.StatusCode)
		}
	}
	if st := p.Stats(); st.Retries < 6 {
		t.Fatalf("stats = %+v: want a retry for every request that met the black hole", st)
	}
}

// TestTCPUpstreamConnectTimeoutRetriedElsewhere: the same for connections
// through a TCP upstream.
func TestTCPUpstreamConnectTimeoutRetriedElsewhere(t *testing.T) {
	v := newFakeView()
	ok := newEchoBackend(t, "ok")
	v.Set("web", inst("hole", blackholeAddr(t)), ok.instance())
	_, addr := startUpstream(t, blackholeConfig(), v)
	for i := range 6 {
		name, err := echoOnce(addr, "ping")
		if err != nil || name != "ok" {
			t.Fatalf("connection %d: %q %v, want the live instance", i, name, err)
		}
	}
}
