package lb

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// getMany sends n GETs from a few workers and counts the non-200 answers.
func getMany(t *testing.T, pc *proxyClient, host string, n, workers int) (failed int64) {
	t.Helper()
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				status, body, err := pc.try(http.MethodGet, host, "/", nil)
				if err != nil || status != http.StatusOK {
					if bad.Add(1) <= 3 {
						t.Logf("failed: %d %q %v", status, body, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	return bad.Load()
}

func TestProxyConnectRefusedRetriedAndEjected(t *testing.T) {
	v := newFakeView()
	bs := threeBackends(t, v)
	bs[1].srv.Close() // connect refused from now on
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)

	if failed := getMany(t, pc, "web", 300, 4); failed != 0 {
		t.Fatalf("%d of 300 requests failed with one instance refusing connections", failed)
	}
	st := p.Stats()
	if st.Ejections < 1 || st.Retries < 1 {
		t.Fatalf("stats = %+v: want the dead instance ejected after a retry", st)
	}
	if until := p.pool("web", "").current().all.eps[1].ejectedUntil.Load(); until < time.Now().UnixNano() {
		t.Fatal("instance b is not ejected")
	}
}

// TestProxyOnlyInstanceRefuses: when no other instance is left to retry on,
// the client learns what went wrong (502, the connect error), not that
// there is no healthy instance, and no retry is counted or budgeted.
func TestProxyOnlyInstanceRefuses(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	a.srv.Close()
	v.Set("web", a.instance())
	cfg := testConfig()
	cfg.EjectAfterErrors = 0
	p := startProxy(t, cfg, v)
	status, body := newProxyClient(t, p).get(t, "web", "/")
	if status != http.StatusBadGateway || !strings.Contains(body, "refused") {
		t.Errorf("only instance refusing: %d %q, want 502 naming the connect error", status, body)
	}
	if st := p.Stats(); st.Retries != 0 {
		t.Errorf("stats = %+v: no retry was possible", st)
	}
}

// resetter makes a backend read the request and then drop the connection
// without an answer.
func resetter(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestProxyResetBeforeHeadersRetriedForGET(t *testing.T) {
	t.Run("with ejection", func(t *testing.T) {
		v := newFakeView()
		bs := threeBackends(t, v)
		bs[0].handle(resetter)
		p := startProxy(t, testConfig(), v)
		if failed := getMany(t, newProxyClient(t, p), "web", 300, 4); failed != 0 {
			t.Fatalf("%d of 300 GETs failed", failed)
		}
		if st := p.Stats(); st.Ejections != 1 || st.Retries < 1 {
			t.Fatalf("stats = %+v: want the resetting instance ejected", st)
		}
	})
	t.Run("without ejection", func(t *testing.T) {
		v := newFakeView()
		bs := threeBackends(t, v)
		bs[0].handle(resetter)
		cfg := roundRobinConfig()
		cfg.EjectAfterErrors = 0
		cfg.RetryBudget = 1 // a third of requests need a retry
		p := startProxy(t, cfg, v)
		if failed := getMany(t, newProxyClient(t, p), "web", 300, 4); failed != 0 {
			t.Fatalf("%d of 300 GETs failed", failed)
		}
		// Every request that met the resetter was retried once, elsewhere.
		// Its retry takes the next turn of the round robin, so about a
		// quarter of the requests meet it (75 when they run one at a time).
		st := p.Stats()
		if st.Ejections != 0 || st.Retries < 50 || st.Retries != uint64(bs[0].hits.Load()) {
			t.Fatalf("stats = %+v, resetting backend saw %d: want one retry per reset, no ejection", st, bs[0].hits.Load())
		}
	})
}

func TestProxyResetAfterBodyNotRetriedForPOST(t *testing.T) {
	v := newFakeView()
	bad, good := newBackend(t, "a"), newBackend(t, "b")
	bad.handle(resetter)
	v.Set("web", bad.instance(), good.instance())
	cfg := roundRobinConfig()
	cfg.EjectAfterErrors = 0
	p := startProxy(t, cfg, v)
	pc := newProxyClient(t, p)

	var ok, badGateway int
	for i := range 10 {
		status, body, err := pc.try(http.MethodPost, "web", "/orders", strings.NewReader(fmt.Sprintf(`{"order":%d}`, i)))
		switch {
		case err != nil:
			t.Fatal(err)
		case status == http.StatusOK && body == "b":
			ok++
		case status == http.StatusBadGateway:
			badGateway++
			if strings.Count(body, "\n") != 1 {
				t.Errorf("502 body %q: want one line", body)
			}
		default:
			t.Fatalf("POST: %d %q", status, body)
		}
	}
	if ok != 5 || badGateway != 5 || good.hits.Load() != 5 || bad.hits.Load() != 5 {
		t.Fatalf("%d ok, %d 502, good backend saw %d, bad one %d: a POST whose body was sent must not be replayed",
			ok, badGateway, good.hits.Load(), bad.hits.Load())
	}
	if st := p.Stats(); st.Retries != 0 {
		t.Fatalf("stats = %+v: want no retries", st)
	}
}

// TestProxyRetryBudget: with every instance failing after it got the
// request (resets), retries are capped at MinRetriesPerSecond plus
// RetryBudget of the requests, so a sick pool does not get a retry storm.
func TestProxyRetryBudget(t *testing.T) {
	v := newFakeView()
	bs := threeBackends(t, v)
	for _, b := range bs {
		b.handle(resetter)
	}
	cfg := testConfig()
	cfg.EjectAfterErrors = 0
	cfg.MaxRetries = 2
	cfg.MinRetriesPerSecond = 5
	cfg.RetryBudget = 0.2
	p := startProxy(t, cfg, v)
	pc := newProxyClient(t, p)

	const n = 200
	start := time.Now()
	for range n {
		if status, _ := pc.get(t, "web", "/"); status != http.StatusBadGateway {
			t.Fatalf("status %d with every instance resetting, want 502", status)
		}
	}
	end := time.Now()
	// The budget is per second: min + ratio × max(this second's requests,
	// the previous second's).
	seconds := end.Unix() - start.Unix() + 1
	limit := float64(cfg.MinRetriesPerSecond) + cfg.RetryBudget*n
	if seconds > 1 {
		limit = float64(seconds*int64(cfg.MinRetriesPerSecond)) + 2*cfg.RetryBudget*n
	}
	st := p.Stats()
	t.Logf("%d requests over %d second(s): %d retries, limit %.0f (without a budget: %d)", n, seconds, st.Retries, limit, cfg.MaxRetries*n)
	if float64(st.Retries) > limit {
		t.Fatalf("%d retries, budget allows %.0f", st.Retries, limit)
	}
	if st.Retries < uint64(cfg.MinRetriesPerSecond) {
		t.Fatalf("%d retries: the minimum per second should be allowed", st.Retries)
	}
}

// TestProxyRefusedConnectsAreFreeRetries: a refused connect delivered
// nothing and loaded no one, so retrying it elsewhere does not draw on the
// retry budget (fast.go, http.go).
func TestProxyRefusedConnectsAreFreeRetries(t *testing.T) {
	v := newFakeView()
	bs := threeBackends(t, v)
	bs[0].srv.Close()
	bs[1].srv.Close()
	cfg := roundRobinConfig()
	cfg.EjectAfterErrors = 0
	cfg.MinRetriesPerSecond = 0
	cfg.RetryBudget = 0
	p := startProxy(t, cfg, v)
	if failed := getMany(t, newProxyClient(t, p), "web", 60, 1); failed != 0 {
		t.Fatalf("%d of 60 requests failed with one instance up and a zero retry budget", failed)
	}
	if st := p.Stats(); st.Retries < 60 {
		t.Fatalf("stats = %+v: want a retry for every request that met a closed port", st)
	}
}

func TestProxyEjectAfter5xx(t *testing.T) {
	for _, threshold := range []int{0, 3} {
		t.Run(fmt.Sprint("threshold=", threshold), func(t *testing.T) {
			v := newFakeView()
			bs := threeBackends(t, v)
			bs[0].handle(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "broken", http.StatusInternalServerError)
			})
			cfg := roundRobinConfig()
			cfg.EjectAfter5xx = threshold
			p := startProxy(t, cfg, v)
			pc := newProxyClient(t, p)
			var errors5xx int
			for range 90 {
				if status, _ := pc.get(t, "web", "/"); status == http.StatusInternalServerError {
					errors5xx++
				}
			}
			st := p.Stats()
			if threshold == 0 {
				if st.Ejections != 0 || bs[0].hits.Load() != 30 {
					t.Fatalf("disabled: %d ejections, failing backend saw %d of 90", st.Ejections, bs[0].hits.Load())
				}
				return
			}
			// 5xx answers are passed on, not retried; the third in a row ejects.
			if st.Ejections != 1 || bs[0].hits.Load() != 3 || errors5xx != 3 || st.Retries != 0 {
				t.Fatalf("enabled: stats %+v, failing backend saw %d, clients saw %d 500s", st, bs[0].hits.Load(), errors5xx)
			}
		})
	}
}

func TestProxyEjectionEnds(t *testing.T) {
	v := newFakeView()
	bs := threeBackends(t, v)
	var failing atomic.Bool
	failing.Store(true)
	bs[0].handle(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "a")
	})
	cfg := roundRobinConfig()
	cfg.EjectAfter5xx = 1
	cfg.BaseEjection = 200 * time.Millisecond
	cfg.MaxEjection = time.Second
	p := startProxy(t, cfg, v)
	pc := newProxyClient(t, p)

	var ejectedAfter time.Time // the ejection happened after this
	waitFor(t, 5*time.Second, "the failing backend to be ejected", func() bool {
		ejectedAfter = time.Now()
		pc.get(t, "web", "/")
		return p.Stats().Ejections == 1
	})
	failing.Store(false)
	hits := bs[0].hits.Load()
	waitFor(t, 5*time.Second, "the ejected backend to serve again", func() bool {
		pc.get(t, "web", "/")
		return bs[0].hits.Load() > hits
	})
	if d := time.Since(ejectedAfter); d < 190*time.Millisecond {
		t.Fatalf("back after %v, BaseEjection is 200ms", d)
	}
}

func TestProxyEjectionBackoff(t *testing.T) {
	cfg := testConfig()
	cfg.BaseEjection = time.Second
	cfg.MaxEjection = 3 * time.Second
	p, _, s := policyPool(t, cfg, PolicyRoundRobin, 1, 1, 1, 1)
	e := s.all.eps[0]
	var lengths []time.Duration
	for range 4 {
		e.ejectedUntil.Store(0) // as if the last ejection ran out
		before := time.Now()
		if !s.failed(p, e, 1) {
			t.Fatal("not ejected")
		}
		lengths = append(lengths, time.Duration(e.ejectedUntil.Load()-before.UnixNano()).Round(100*time.Millisecond))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}
	for i := range want {
		if lengths[i] != want[i] {
			t.Fatalf("ejection lengths %v, want %v", lengths, want)
		}
	}
	// Already ejected: a further failure does not eject (or count) again.
	if s.failed(p, e, 1) {
		t.Fatal("ejected twice")
	}
	if p.Stats().Ejections != 4 {
		t.Fatalf("ejections = %d", p.Stats().Ejections)
	}
}

func TestProxyMaxEjectionShare(t *testing.T) {
	for _, tt := range []struct {
		share float64
		want  int
	}{{0.5, 2}, {0.25, 1}, {0, 1}, {1, 4}} {
		t.Run(fmt.Sprint("share=", tt.share), func(t *testing.T) {
			v := newFakeView()
			var ins []Instance
			for i := range 4 {
				b := newBackend(t, fmt.Sprint(i))
				b.handle(func(w http.ResponseWriter, r *http.Request) {
					http.Error(w, "broken", http.StatusInternalServerError)
				})
				ins = append(ins, b.instance())
			}
			v.Set("web", ins...)
			cfg := roundRobinConfig()
			cfg.EjectAfter5xx = 1
			cfg.MaxEjectionShare = tt.share
			p := startProxy(t, cfg, v)
			pc := newProxyClient(t, p)
			for range 40 {
				if status, _ := pc.get(t, "web", "/"); status != http.StatusInternalServerError {
					t.Fatalf("status %d", status)
				}
			}
			ejected := 0
			now := time.Now().UnixNano()
			for _, e := range p.pool("web", "").current().all.eps {
				if e.ejectedUntil.Load() > now {
					ejected++
				}
			}
			if ejected != tt.want || p.Stats().Ejections != uint64(tt.want) {
				t.Fatalf("%d ejected (%d ejections) of 4 with share %v, want %d", ejected, p.Stats().Ejections, tt.share, tt.want)
			}
		})
	}
}

func TestProxyMaxRequestsPerInstance(t *testing.T) {
	v := newFakeView()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	release := make(chan struct{})
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "a")
	})
	v.Set("web", a.instance(), b.instance())
	cfg := roundRobinConfig()
	cfg.MaxRequestsPerInstance = 1
	p := startProxy(t, cfg, v)
	pc := newProxyClient(t, p)

	slow := make(chan int, 1)
	go func() {
		status, _ := pc.get(t, "web", "/slow") // round robin starts at a
		slow <- status
	}()
	waitFor(t, 5*time.Second, "the slow request to reach a", func() bool { return a.hits.Load() == 1 })
	for range 10 {
		if _, body := pc.get(t, "web", "/"); body != "b" {
			t.Fatalf("answer from %q while a is at MaxRequestsPerInstance", body)
		}
	}
	close(release)
	if status := <-slow; status != http.StatusOK {
		t.Fatalf("slow request: %d", status)
	}
	seen := map[string]bool{}
	for range 4 {
		_, body := pc.get(t, "web", "/")
		seen[body] = true
	}
	if !seen["a"] {
		t.Fatal("a never served again after its request finished")
	}
}

func TestProxyTimeout(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	})
	v.Set("web", a.instance())
	cfg := testConfig()
	cfg.Timeout = 150 * time.Millisecond
	p := startProxy(t, cfg, v)
	start := time.Now()
	status, body := newProxyClient(t, p).get(t, "web", "/")
	if status != http.StatusGatewayTimeout {
		t.Fatalf("status %d %q, want 504", status, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v with Timeout %v", d, cfg.Timeout)
	}
}

// TestProxyBackendClosesIdleConnections covers the keep-alive race: a
// backend that closes idle connections (Node.js does after 5 s) must not
// cost a request, not even a POST, and must not be ejected for it.
func TestProxyBackendClosesIdleConnections(t *testing.T) {
	v := newFakeView()
	// Longer than staleCheckAfter, as every real server's idle timeout is.
	a := newBackendWith(t, "a", func(s *http.Server) { s.IdleTimeout = 300 * time.Millisecond })
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)
	for i := range 3 {
		status, body := pc.do(t, http.MethodPost, "web", "/", strings.NewReader("payload"))
		if status != http.StatusOK || body != "a" {
			t.Fatalf("POST %d after the backend closed its idle connection: %d %q", i, status, body)
		}
		closed := a.closed.Load()
		waitFor(t, 5*time.Second, "the backend to close the idle connection", func() bool {
			return a.closed.Load() > closed
		})
		status, body = pc.get(t, "web", "/")
		if status != http.StatusOK || body != "a" {
			t.Fatalf("GET %d after the backend closed its idle connection: %d %q", i, status, body)
		}
		waitFor(t, 5*time.Second, "the backend to close the idle connection", func() bool {
			return a.closed.Load() > closed+1
		})
	}
	if st := p.Stats(); st.Ejections != 0 || st.Errors != 0 {
		t.Fatalf("stats = %+v: idle closes must not count as failures", st)
	}
}

// TestProxyInstanceGoneWithIdleConnections: an instance that goes away
// while the proxy holds idle connections to it (its node killed) costs no
// request, not even a POST with no retry budget: its idle connections are
// found closed before anything is written on them, the fresh connect that
// follows fails, and the request goes to another instance.
func TestProxyInstanceGoneWithIdleConnections(t *testing.T) {
	v := newFakeView()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	release := make(chan struct{})
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "a")
	})
	v.Set("web", a.instance())
	cfg := roundRobinConfig()
	cfg.RetryBudget, cfg.MinRetriesPerSecond = 0, 0
	p := startProxy(t, cfg, v)
	pc := newProxyClient(t, p)

	// Four requests at once leave four idle connections to a.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { pc.get(t, "web", "/") })
	}
	waitFor(t, 5*time.Second, "four requests at a", func() bool { return a.hits.Load() == 4 })
	close(release)
	wg.Wait()
	if n := a.conns.Load(); n != 4 {
		t.Fatalf("a has %d connections from the proxy, want 4", n)
	}

	v.Set("web", a.instance(), b.instance())
	a.srv.Close()
	waitFor(t, 5*time.Second, "a to close its connections", func() bool { return a.closed.Load() == 4 })
	// Idle for longer than the threshold of the check, as a pooled
	// connection to a node that died a moment ago is.
	time.Sleep(staleCheckAfter + 50*time.Millisecond)

	for i := range 6 {
		method, body := http.MethodGet, io.Reader(nil)
		if i%2 == 1 {
			method, body = http.MethodPost, strings.NewReader("payload")
		}
		if status, got := pc.do(t, method, "web", "/", body); status != http.StatusOK || got != "b" {
			t.Fatalf("%s %d after a went away: %d %q, want 200 from b", method, i, status, got)
		}
	}
}

func TestProxyTryTimeoutRetriesGET(t *testing.T) {
	v := newFakeView()
	hang, ok := newBackend(t, "a"), newBackend(t, "b")
	hang.handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	v.Set("web", hang.instance(), ok.instance())
	cfg := roundRobinConfig()
	cfg.TryTimeout = 100 * time.Millisecond
	cfg.RetryBudget = 1
	p := startProxy(t, cfg, v)
	pc := newProxyClient(t, p)
	for range 4 {
		if status, body := pc.get(t, "web", "/"); status != http.StatusOK || body != "b" {
			t.Fatalf("%d %q: a GET that timed out on one instance should be retried", status, body)
		}
	}
}

// TestProxyUnknownHostsDoNotAccumulate: every distinct Host that names no
// service must not leave state behind, or a client cycling through names
// grows the proxy without bound (and each new pool copies the whole map).
func TestProxyUnknownHostsDoNotAccumulate(t *testing.T) {
	v := newFakeView()
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)
	for i := range 500 {
		if status, _ := pc.get(t, fmt.Sprintf("nosuch%d", i), "/"); status != http.StatusServiceUnavailable {
			t.Fatalf("status %d", status)
		}
	}
	if n := len(*p.pools.Load()); n > 50 {
		t.Fatalf("%d pools kept after 500 requests for unknown services", n)
	}
}
