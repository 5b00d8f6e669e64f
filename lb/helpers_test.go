package lb

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testConfig is the fast test profile: loopback, port 0, quick to shut down.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

// newTestProxy builds a proxy that is not started: for policy and pool tests.
func newTestProxy(t testing.TB, cfg Config, v View) *Proxy {
	t.Helper()
	p, err := New(cfg, v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startProxy builds and starts a proxy and shuts it down when the test ends.
func startProxy(t testing.TB, cfg Config, v View) *Proxy {
	t.Helper()
	p := newTestProxy(t, cfg, v)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p
}

func inst(id, addr string, tags ...string) Instance {
	return Instance{ID: id, Addr: addr, Weight: 1, Tags: tags}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// backend is a real HTTP server that answers with its name unless its
// handler is replaced. It counts requests and new connections.
type backend struct {
	name   string
	srv    *httptest.Server
	hits   atomic.Int64
	conns  atomic.Int64 // opened
	closed atomic.Int64

	mu      sync.Mutex // guards handler
	handler http.HandlerFunc
}

func newBackend(t testing.TB, name string) *backend {
	t.Helper()
	return newBackendWith(t, name, nil)
}

// newBackendWith lets configure adjust the server before it starts.
func newBackendWith(t testing.TB, name string, configure func(*http.Server)) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			b.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			b.closed.Add(1)
		}
	}
	if configure != nil {
		configure(b.srv.Config)
	}
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.mu.Lock()
	h := b.handler
	b.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	io.Copy(io.Discard, r.Body)
	io.WriteString(w, b.name)
}

// handle replaces the backend's handler; nil restores the default.
func (b *backend) handle(h http.HandlerFunc) {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
}

func (b *backend) addr() string { return b.srv.Listener.Addr().String() }

func (b *backend) instance(tags ...string) Instance { return inst(b.name, b.addr(), tags...) }

// proxyClient talks to the proxy's HTTP listener directly (origin-form
// requests with a Host header).
type proxyClient struct {
	addr string
	c    *http.Client
}

func newProxyClient(t testing.TB, p *Proxy) *proxyClient {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &proxyClient{addr: p.HTTPAddr(), c: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

// get sends GET path with the given Host and returns status and body; a
// transport error fails the test (from any goroutine).
func (pc *proxyClient) get(t testing.TB, host, path string) (int, string) {
	t.Helper()
	return pc.do(t, http.MethodGet, host, path, nil)
}

func (pc *proxyClient) do(t testing.TB, method, host, path string, body io.Reader) (int, string) {
	t.Helper()
	status, b, err := pc.try(method, host, path, body)
	if err != nil {
		t.Errorf("%s %s%s: %v", method, host, path, err)
	}
	return status, b
}

// try sends one request and reports what happened, without judging it.
func (pc *proxyClient) try(method, host, path string, body io.Reader) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+pc.addr+path, body)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := pc.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
