package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestTrafficE2E proves issue 13's traffic policy on real agents: three
// "shoal agent" processes on 127.0.0.1 (--proxy-debug-headers), instances of
// "web" in two subsets (Meta version v1 and v2) spread over them, and
// service-resolver, -splitter and -router entries written on one agent and
// applied by every agent's proxy, on the shared listener and on a TCP
// upstream listener (per connection; per request once service-defaults
// says web speaks HTTP). Every claim is checked with real HTTP requests
// through the proxies; RESULT lines carry the figures.
//
// Reproduce: go test -race -count=1 -run TestTrafficE2E -v ./cmd/shoal/
func TestTrafficE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs agents as processes")
	}
	bin := buildShoal(t, t.TempDir())
	ports := freePorts(t, 3)
	// n1 also has a TCP upstream listener for web.
	tcpWeb := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	var agents []*proxyAgent
	for i, name := range []string{"n1", "n2", "n3"} {
		flags := []string{"--proxy-debug-headers"}
		var join []string
		if i == 0 {
			flags = append(flags, "--upstream", "web="+tcpWeb)
		} else {
			join = []string{agents[0].gossipAddr}
		}
		agents = append(agents, startProxyAgent(t, bin, name, ports[i], flags, join...))
	}
	n1, n2, n3 := agents[0], agents[1], agents[2]

	// The instances, by agent. pay's have TTL checks the test flips.
	backends := map[string]*trafficBackend{}
	instance := func(a *proxyAgent, service, id string, meta map[string]string, check map[string]any) {
		b := startTrafficBackend(t, id)
		backends[id] = b
		def := map[string]any{"ID": id, "Name": service, "Address": "127.0.0.1", "Port": b.port(), "Meta": meta}
		if check != nil {
			def["Check"] = check
		}
		a.register(t, def)
	}
	v1 := map[string]string{"version": "v1"}
	v2 := map[string]string{"version": "v2"}
	ttl := map[string]any{"TTL": "10m", "Status": "passing"}
	instance(n1, "web", "web-v1-n1", v1, nil)
	instance(n2, "web", "web-v1-n2", v1, nil)
	instance(n2, "web", "web-v2-n2", v2, nil)
	instance(n3, "web", "web-v2-n3", v2, nil)
	instance(n3, "legacy", "legacy-n3", nil, nil)
	instance(n2, "slow", "slow-n2", nil, nil)
	instance(n1, "flaky", "flaky-ok", nil, nil)
	instance(n3, "flaky", "flaky-bad", nil, nil)
	backends["flaky-bad"].status.Store(http.StatusServiceUnavailable)
	instance(n2, "pay", "pay-n2", nil, ttl)
	instance(n3, "pay", "pay-n3", nil, ttl)
	instance(n1, "pay-backup", "pay-backup-n1", nil, nil)
	want := map[string][]string{
		"web": {"web-v1-n1", "web-v1-n2", "web-v2-n2", "web-v2-n3"}, "legacy": {"legacy-n3"}, "slow": {"slow-n2"},
		"flaky": {"flaky-ok", "flaky-bad"}, "pay": {"pay-n2", "pay-n3"}, "pay-backup": {"pay-backup-n1"},
	}
	for _, a := range agents {
		for service, ids := range want {
			testutil.WaitState(t, converge, 100*time.Millisecond, fmt.Sprintf("%s to see %s passing", a.name, ids), func() (bool, string) {
				got, err := a.passing(service)
				if err != nil {
					return false, err.Error()
				}
				for _, id := range ids {
					if !got[id] {
						return false, fmt.Sprint(got)
					}
				}
				return true, ""
			})
		}
	}

	// The resolver goes in with the CLI, as HCL; the rest over the API.
	resolverFile := filepath.Join(t.TempDir(), "web-resolver.hcl")
	if err := os.WriteFile(resolverFile, []byte(`Kind = "service-resolver"
Name = "web"
Subsets = {
  v1 = { Filter = "Service.Meta.version == v1" }
  v2 = { Filter = "Service.Meta.version == v2" }
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := runShoal(t, bin, "config", "write", "--http-addr", n1.httpAddr, resolverFile); res.code != 0 {
		t.Fatalf("shoal config write %s: exit %d: %s", resolverFile, res.code, res.stderr)
	}
	writeEntry(t, n1, map[string]any{"Kind": "service-router", "Name": "web", "Routes": []any{
		// 0: a header route to the canary.
		map[string]any{"Match": map[string]any{"HTTP": map[string]any{"Header": []any{map[string]any{"Name": "X-Canary", "Exact": "1"}}}},
			"Destination": map[string]any{"ServiceSubset": "v2"}},
		// 1: a path route to the stable subset.
		map[string]any{"Match": map[string]any{"HTTP": map[string]any{"PathExact": "/v1-only"}},
			"Destination": map[string]any{"ServiceSubset": "v1"}},
		// 2: another service, under another prefix.
		map[string]any{"Match": map[string]any{"HTTP": map[string]any{"PathPrefix": "/legacy/"}},
			"Destination": map[string]any{"Service": "legacy", "PrefixRewrite": "/modern/"}},
		// 3: a route with a timeout of its own.
		map[string]any{"Match": map[string]any{"HTTP": map[string]any{"PathPrefix": "/slow"}},
			"Destination": map[string]any{"Service": "slow", "RequestTimeout": "300ms"}},
		// 4 and 5: the same service with and without retries on 503.
		map[string]any{"Match": map[string]any{"HTTP": map[string]any{"PathPrefix": "/retry"}},
			"Destination": map[string]any{"Service": "flaky", "NumRetries": 2, "RetryOnStatusCodes": []int{503}}},
		map[string]any{"Match": map[string]any{"HTTP": map[string]any{"PathPrefix": "/noretry"}},
			"Destination": map[string]any{"Service": "flaky"}},
	}})
	writeEntry(t, n1, splitter(90, 10))
	writeEntry(t, n1, map[string]any{"Kind": "service-resolver", "Name": "pay",
		"Failover": map[string]any{"*": map[string]any{"Service": "pay-backup"}}})

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	// Every proxy has the whole chain once a request to the last route
	// written, and one to the split, answer as the entries say.
	for _, a := range agents {
		testutil.WaitState(t, converge, 100*time.Millisecond, a.name+"'s proxy to apply the router and splitter", func() (bool, string) {
			r := trafficGet(client, a, "web", "/noretry", nil)
			if r.err != nil || !strings.HasPrefix(r.backend, "flaky-") {
				return false, r.String()
			}
			r = trafficGet(client, a, "web", "/", nil)
			return r.err == nil && strings.HasPrefix(r.route, "route=default target=web/v"), r.String()
		})
	}

	t.Run("a 90/10 split over 10,000 requests", func(t *testing.T) {
		const total, workers = 10000, 8
		subsetBefore := map[string]float64{}
		for _, sub := range []string{"v1", "v2"} {
			subsetBefore[sub] = scrapeMetric(t, n2, "shoal_proxy_subset_requests_total", `service="web"`, `subset="`+sub+`"`)
		}
		var next atomic.Int64
		var mu sync.Mutex
		counts := map[string]int{}
		var failed []string
		var wg sync.WaitGroup
		t0 := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total {
					r := trafficGet(client, n2, "web", "/", nil)
					mu.Lock()
					if r.err != nil || r.code != http.StatusOK {
						failed = append(failed, r.String())
					} else {
						counts[r.backend]++
						// The backend that answered and the subset the
						// proxy names must agree.
						if !strings.Contains(r.route, "target=web/"+subsetOf(r.backend)) {
							failed = append(failed, "answer of "+r.backend+" with X-Shoal-Route "+r.route)
						}
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		took := time.Since(t0)
		v2n := counts["web-v2-n2"] + counts["web-v2-n3"]
		share := 100 * float64(v2n) / total
		t.Logf("RESULT split 90/10 through n2's proxy: %d requests in %v, %d failed; v2 %d = %.2f %% (want 9-11 %%); per instance %v",
			total, took.Round(time.Millisecond), len(failed), v2n, share, counts)
		if len(failed) > 0 {
			t.Fatalf("%d requests failed, first: %s", len(failed), failed[0])
		}
		if share < 9 || share > 11 {
			t.Errorf("v2 took %.2f %% of %d requests, want 10 ± 1 %%", share, total)
		}
		// The proxy's own count by subset agrees.
		for sub, n := range map[string]int{"v1": total - v2n, "v2": v2n} {
			got := scrapeMetric(t, n2, "shoal_proxy_subset_requests_total", `service="web"`, `subset="`+sub+`"`) - subsetBefore[sub]
			if got != float64(n) {
				t.Errorf("shoal_proxy_subset_requests_total{subset=%q} on n2 went up by %v, want %d", sub, got, n)
			}
		}
	})

	t.Run("a TCP upstream splits 90/10 per connection", func(t *testing.T) {
		const total, workers = 2000, 8
		var next atomic.Int64
		var mu sync.Mutex
		counts := map[string]int{}
		var failed []string
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total {
					backend, err := tcpGet(tcpWeb)
					mu.Lock()
					if err != nil {
						failed = append(failed, err.Error())
					} else {
						counts[subsetOf(backend)]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		share := 100 * float64(counts["v2"]) / total
		t.Logf("RESULT TCP upstream on n1: %d connections, %d failed; v2 %.2f %% (want 7.5-12.5 %%); by subset %v", total, len(failed), share, counts)
		if len(failed) > 0 {
			t.Fatalf("%d connections failed, first: %s", len(failed), failed[0])
		}
		// 2,000 draws: σ is 0.67 %, so ± 2.5 % is about 3.7 σ.
		if share < 7.5 || share > 12.5 || counts["v1"]+counts["v2"] != total {
			t.Errorf("by subset %v: v2 took %.2f %%, want 10 ± 2.5 %%", counts, share)
		}
	})

	t.Run("0/100 written on another agent applies on every proxy within 1s under load", func(t *testing.T) {
		const rps = 100
		var loads []*trafficLoad
		for _, a := range agents {
			loads = append(loads, startTrafficLoad(client, a, "web", "/", rps))
		}
		testutil.WaitState(t, 10*time.Second, 100*time.Millisecond, "a second of load through every proxy", func() (bool, string) {
			var sent []int
			for _, l := range loads {
				sent = append(sent, len(l.snapshot()))
			}
			return sent[0] >= rps && sent[1] >= rps && sent[2] >= rps, fmt.Sprint(sent)
		})
		t0 := time.Now()
		writeEntry(t, n3, splitter(0, 100))
		written := time.Since(t0)
		isV2 := func(s trafficSample) bool { return subsetOf(s.backend) == "v2" }
		// The load runs until every proxy has sent only to v2 for a
		// second, or 10 s passed.
		testutil.WaitState(t, 10*time.Second, 100*time.Millisecond, "every proxy to send to v2 alone for a second", func() (bool, string) {
			var state []string
			done := true
			for i, l := range loads {
				at, ok := switchedAt(l.snapshot(), isV2)
				state = append(state, fmt.Sprintf("%s: %v %v", agents[i].name, ok, at.Sub(t0)))
				done = done && ok && time.Since(at) > time.Second
			}
			return done, strings.Join(state, ", ")
		})
		var applied []string
		for i, l := range loads {
			samples := l.finish()
			failed := failures(samples)
			at, ok := switchedAt(samples, isV2)
			after := max(at.Sub(t0), 0)
			applied = append(applied, fmt.Sprintf("%s %v", agents[i].name, after.Round(time.Millisecond)))
			t.Logf("%s: %d requests, %d failed, on v2 alone from %v after the write", agents[i].name, len(samples), len(failed), after.Round(time.Millisecond))
			if len(failed) > 0 {
				t.Errorf("%s: %d of %d requests failed; first: %s", agents[i].name, len(failed), len(samples), failed[0])
			}
			if !ok || after > time.Second {
				t.Errorf("%s: the 0/100 split applied %v after the write (switched: %v), want within 1s", agents[i].name, after, ok)
			}
		}
		for i := range 50 {
			backend, err := tcpGet(tcpWeb)
			if err != nil || subsetOf(backend) != "v2" {
				t.Fatalf("TCP connection %d after the 0/100 split: %q %v, want a v2 instance", i, backend, err)
			}
		}
		t.Logf("RESULT 0/100 written on n3 (PUT took %v) applied, at %d GET/s through each proxy with 0 failed: %s (resolution %v)",
			written.Round(time.Millisecond), rps, strings.Join(applied, ", "), time.Second/rps)
	})

	t.Run("header and path routes", func(t *testing.T) {
		// The default now sends everything to v2 (0/100): the routes must
		// override it, and only for the requests they match.
		cases := []struct {
			what, path   string
			header       map[string]string
			route, group string
		}{
			{"X-Canary: 1", "/", map[string]string{"X-Canary": "1"}, "route=0 target=web/v2", "v2"},
			{"PathExact /v1-only", "/v1-only", nil, "route=1 target=web/v1", "v1"},
			{"PathExact /v1-only, with X-Canary: 1 (first route wins)", "/v1-only", map[string]string{"X-Canary": "1"}, "route=0 target=web/v2", "v2"},
			{"X-Canary: 2 (no match)", "/", map[string]string{"X-Canary": "2"}, "route=default target=web/v2", "v2"},
			{"/v1-only/x (not exact)", "/v1-only/x", nil, "route=default target=web/v2", "v2"},
		}
		var results []string
		for _, tc := range cases {
			counts := map[string]int{}
			for range 100 {
				r := trafficGet(client, n1, "web", tc.path, tc.header)
				if r.err != nil || r.code != http.StatusOK {
					t.Fatalf("%s: %s", tc.what, r)
				}
				if !strings.HasPrefix(r.route, tc.route) || subsetOf(r.backend) != tc.group {
					t.Fatalf("%s: answered by %s with X-Shoal-Route %q, want subset %s via %q", tc.what, r.backend, r.route, tc.group, tc.route)
				}
				counts[r.backend]++
			}
			results = append(results, fmt.Sprintf("%s → %v", tc.what, counts))
		}
		t.Logf("RESULT routes, 100 requests each through n1's proxy: %s", strings.Join(results, "; "))
	})

	t.Run("PrefixRewrite", func(t *testing.T) {
		for path, want := range map[string]string{
			"/legacy/":               "/modern/",
			"/legacy/orders/7?x=1&y": "/modern/orders/7?x=1&y",
		} {
			r := trafficGet(client, n2, "web", path, nil)
			if r.err != nil || r.code != http.StatusOK || r.backend != "legacy-n3" {
				t.Fatalf("GET %s: %s, want an answer of legacy-n3", path, r)
			}
			if r.seen != want {
				t.Errorf("GET %s: the backend saw %q, want %q", path, r.seen, want)
			}
			t.Logf("RESULT PrefixRewrite: GET web%s through n2's proxy reached legacy-n3 as %s", path, r.seen)
		}
	})

	t.Run("a route's RequestTimeout fires", func(t *testing.T) {
		slowHits := backends["slow-n2"].hits.Load()
		t0 := time.Now()
		r := trafficGet(client, n1, "web", "/slow?sleep=5s", nil)
		took := time.Since(t0)
		if r.err != nil || r.code != http.StatusGatewayTimeout {
			t.Fatalf("GET /slow?sleep=5s: %s, want 504", r)
		}
		if took < 300*time.Millisecond || took > 2*time.Second {
			t.Errorf("the 504 came after %v, want the route's 300ms (and well before the backend's 5s)", took)
		}
		if backends["slow-n2"].hits.Load() == slowHits {
			t.Errorf("the slow backend never got the request: the 504 is not the timeout's")
		}
		fast := trafficGet(client, n1, "web", "/slow?sleep=50ms", nil)
		if fast.err != nil || fast.code != http.StatusOK || fast.backend != "slow-n2" {
			t.Errorf("GET /slow?sleep=50ms: %s, want 200 from slow-n2 (within the timeout)", fast)
		}
		timeouts := pollMetric(t, n1, 1, "shoal_proxy_route_timeouts_total", `service="web"`, `route="3"`)
		t.Logf("RESULT route timeout: GET /slow?sleep=5s answered 504 after %v (RequestTimeout 300ms); /slow?sleep=50ms 200 in time; shoal_proxy_route_timeouts_total{route=3} %v",
			took.Round(time.Millisecond), timeouts)
	})

	t.Run("a retry on 503 rescues", func(t *testing.T) {
		bad := backends["flaky-bad"]
		// Without the route's retries some requests meet the instance that
		// answers 503 (the proxy's own retries are for failed tries, not
		// answers).
		var plain503 int
		for range 40 {
			r := trafficGet(client, n1, "web", "/noretry", nil)
			if r.err != nil {
				t.Fatal(r)
			}
			if r.code == http.StatusServiceUnavailable {
				plain503++
			}
		}
		if plain503 == 0 {
			t.Fatalf("no 503 in 40 requests without retries: flaky-bad never answered, nothing to rescue")
		}
		// With them, every one succeeds. Paced to 10/s, under the
		// proxy's retry budget floor (10 retries a second).
		before := bad.hits.Load()
		retriesBefore := scrapeMetric(t, n1, "shoal_proxy_route_retries_total", `service="web"`, `route="4"`)
		for i := range 40 {
			r := trafficGet(client, n1, "web", "/retry/"+strconv.Itoa(i), nil)
			if r.err != nil || r.code != http.StatusOK || r.backend != "flaky-ok" {
				t.Fatalf("GET /retry/%d: %s, want 200 from flaky-ok", i, r)
			}
			time.Sleep(100 * time.Millisecond) // pacing, not waiting for anything
		}
		rescued := bad.hits.Load() - before
		if rescued == 0 {
			t.Fatalf("flaky-bad got none of the 40 requests: no retry was needed")
		}
		retries := pollMetric(t, n1, retriesBefore+float64(rescued), "shoal_proxy_route_retries_total", `service="web"`, `route="4"`)
		t.Logf("RESULT retry: without the route's retries %d of 40 answered 503; with RetryOnStatusCodes [503] 40 of 40 answered 200, %d of them after a 503 from flaky-bad (route retries %v → %v)",
			plain503, rescued, retriesBefore, retries)
	})

	t.Run("Failover to another service when every instance is critical, and back", func(t *testing.T) {
		isBackup := func(s trafficSample) bool { return s.backend == "pay-backup-n1" }
		isPrimary := func(s trafficSample) bool { return strings.HasPrefix(s.backend, "pay-n") }
		load := startTrafficLoad(client, n1, "pay", "/", 100)
		testutil.WaitState(t, 10*time.Second, 100*time.Millisecond, "the load to reach pay", func() (bool, string) {
			s := load.snapshot()
			_, ok := switchedAt(s, isPrimary)
			return len(s) >= 50 && ok, fmt.Sprint(len(s), " sent")
		})
		// flip sets both pay checks, n2's then n3's, and returns when each
		// request was sent.
		flip := func(verb string) (sent [2]time.Time) {
			for i, a := range []*proxyAgent{n2, n3} {
				id := "service:pay-" + a.name
				req, _ := http.NewRequest(http.MethodPut, "http://"+a.httpAddr+"/v1/agent/check/"+verb+"/"+id, nil)
				sent[i] = time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s %s on %s: %s %s", verb, id, a.name, resp.Status, b)
				}
			}
			return sent
		}
		// Every instance is critical once the second check fails; one
		// passing again is enough to come back.
		failedAt := flip("fail")[1]
		testutil.WaitState(t, converge, 100*time.Millisecond, "n1's proxy to fail over to pay-backup", func() (bool, string) {
			at, ok := switchedAt(load.snapshot(), isBackup)
			return ok && time.Since(at) > 500*time.Millisecond, fmt.Sprint(ok, at.Sub(failedAt))
		})
		over, _ := switchedAt(load.snapshot(), isBackup)
		recoveredAt := flip("pass")[0]
		testutil.WaitState(t, converge, 100*time.Millisecond, "n1's proxy to come back to pay", func() (bool, string) {
			at, ok := switchedAt(load.snapshot(), isPrimary)
			return ok && time.Since(at) > 500*time.Millisecond, fmt.Sprint(ok, at.Sub(recoveredAt))
		})
		samples := load.finish()
		back, _ := switchedAt(samples, isPrimary)
		failed := failures(samples)
		counts := map[string]int{}
		for _, s := range samples {
			counts[s.backend]++
		}
		t.Logf("RESULT failover: %d requests at 100/s through n1's proxy, %d failed; all to pay-backup %v after the second pay check was failed, all back to pay %v after the first passed again (resolution 10ms); per instance %v",
			len(samples), len(failed), max(over.Sub(failedAt), 0).Round(time.Millisecond), max(back.Sub(recoveredAt), 0).Round(time.Millisecond), counts)
		if len(failed) > 0 {
			t.Errorf("%d of %d requests failed; first: %s", len(failed), len(samples), failed[0])
		}
	})

	t.Run("an upstream listener of an HTTP service routes each request", func(t *testing.T) {
		writeEntry(t, n2, map[string]any{"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
		// One keep-alive connection to n1's upstream listener of web.
		var dials atomic.Int32
		up := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			MaxConnsPerHost: 1,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, "tcp", tcpWeb)
			},
		}}
		defer up.CloseIdleConnections()
		get := func(path string, header map[string]string) trafficResult {
			req, _ := http.NewRequest(http.MethodGet, "http://web"+path, nil)
			for k, v := range header {
				req.Header.Set(k, v)
			}
			resp, err := up.Do(req)
			if err != nil {
				return trafficResult{err: err}
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body)
			return trafficResult{code: resp.StatusCode, backend: resp.Header.Get("X-Backend"), seen: resp.Header.Get("X-Seen-Path"),
				route: resp.Header.Get("X-Shoal-Route")}
		}
		// Until the entry reaches n1, the listener pipes the bytes of each
		// new connection, for as long as it lasts: each try takes a new one.
		testutil.WaitState(t, converge, 100*time.Millisecond, "n1's upstream listener to route requests", func() (bool, string) {
			up.CloseIdleConnections()
			r := get("/v1-only", nil)
			return r.err == nil && strings.HasPrefix(r.route, "route=1 "), r.String()
		})
		up.CloseIdleConnections()
		dials.Store(0)
		counts := map[string]int{}
		for i := range 30 {
			var r trafficResult
			var want string
			switch i % 3 {
			case 0:
				r, want = get("/", map[string]string{"X-Canary": "1"}), "v2"
			case 1:
				r, want = get("/v1-only", nil), "v1"
			default:
				r, want = get("/legacy/x", nil), "legacy"
			}
			if r.err != nil || r.code != http.StatusOK {
				t.Fatalf("request %d over the upstream listener: %s", i, r)
			}
			got := subsetOf(r.backend)
			if r.backend == "legacy-n3" && r.seen == "/modern/x" {
				got = "legacy"
			}
			if got != want {
				t.Fatalf("request %d over the upstream listener: answered by %s (saw %s), want %s", i, r.backend, r.seen, want)
			}
			counts[want]++
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("%d connections for 30 requests, want them all on one", n)
		}
		t.Logf("RESULT upstream listener of web with Protocol http: 30 requests on %d connection, each routed on its own: %v", dials.Load(), counts)
	})
}

// passing returns the IDs of service's instances that pass on the agent.
func (a *proxyAgent) passing(service string) (map[string]bool, error) {
	resp, err := http.Get("http://" + a.httpAddr + "/v1/health/service/" + service + "?passing")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var entries []struct{ Service struct{ ID string } }
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, fmt.Errorf("%s: /v1/health/service/%s: %s: %v", a.name, service, resp.Status, err)
	}
	ids := make(map[string]bool, len(entries))
	for _, e := range entries {
		ids[e.Service.ID] = true
	}
	return ids, nil
}

// tcpGet opens a connection to a TCP upstream listener of web, sends one
// HTTP request over it and returns the name of the backend that answered.
func tcpGet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("TCP upstream: %s", resp.Status)
	}
	return resp.Header.Get("X-Backend"), nil
}

// splitter is web's service-splitter: v1 and v2 weighted as given.
func splitter(v1, v2 float64) map[string]any {
	return map[string]any{"Kind": "service-splitter", "Name": "web", "Splits": []any{
		map[string]any{"Weight": v1, "ServiceSubset": "v1"},
		map[string]any{"Weight": v2, "ServiceSubset": "v2"},
	}}
}

// subsetOf is the version in a web backend's name: web-v2-n3 → v2.
func subsetOf(backend string) string {
	if f := strings.Split(backend, "-"); len(f) == 3 && f[0] == "web" {
		return f[1]
	}
	return ""
}

// writeEntry writes a config entry on the agent with PUT /v1/config.
func writeEntry(t *testing.T, a *proxyAgent, entry map[string]any) {
	t.Helper()
	body, err := json.Marshal(entry)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+a.httpAddr+"/v1/config", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("PUT /v1/config on %s: %v", a.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "true" {
		t.Fatalf("PUT /v1/config %s/%s on %s: %s %s", entry["Kind"], entry["Name"], a.name, resp.Status, bytes.TrimSpace(b))
	}
}

// trafficBackend is an instance of the traffic tests, in the test process:
// it answers with its name (the body and X-Backend), tells the request
// target it received (X-Seen-Path), sleeps first when asked (?sleep=1s),
// and answers with status (200 unless changed).
type trafficBackend struct {
	name   string
	ln     net.Listener
	status atomic.Int32
	hits   atomic.Int64
}

func startTrafficBackend(t *testing.T, name string) *trafficBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &trafficBackend{name: name, ln: ln}
	b.status.Store(http.StatusOK)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Backend", b.name)
		w.Header().Set("X-Seen-Path", r.RequestURI)
		w.WriteHeader(int(b.status.Load()))
		io.WriteString(w, b.name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *trafficBackend) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// trafficResult is what a request through a proxy got.
type trafficResult struct {
	code    int
	backend string // X-Backend: the instance that answered
	seen    string // X-Seen-Path: the request target it received
	route   string // X-Shoal-Route: the proxy's decision
	err     error
}

func (r trafficResult) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("%d from %q (X-Shoal-Route %q)", r.code, r.backend, r.route)
}

// trafficGet sends GET path for service host through the agent's proxy.
func trafficGet(c *http.Client, a *proxyAgent, host, path string, header map[string]string) trafficResult {
	req, err := http.NewRequest(http.MethodGet, "http://"+a.proxyAddr+path, nil)
	if err != nil {
		return trafficResult{err: err}
	}
	req.Host = host
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return trafficResult{err: err}
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return trafficResult{err: err}
	}
	return trafficResult{code: resp.StatusCode, backend: resp.Header.Get("X-Backend"), seen: resp.Header.Get("X-Seen-Path"),
		route: resp.Header.Get("X-Shoal-Route")}
}

// trafficSample is one request of a load: when it was sent, what answered.
type trafficSample struct {
	at time.Time
	trafficResult
}

// trafficLoad is an open-loop GET load through one proxy: rps requests a
// second whatever their latency, each one recorded.
type trafficLoad struct {
	stop, done chan struct{}

	mu      sync.Mutex // guards samples
	samples []trafficSample
}

func startTrafficLoad(c *http.Client, a *proxyAgent, host, path string, rps int) *trafficLoad {
	l := &trafficLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		begin := time.Now()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for sent := 0; ; {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			// A late tick sends what is due, so the rate holds.
			for due := int(time.Since(begin).Seconds() * float64(rps)); sent < due; sent++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					at := time.Now()
					r := trafficGet(c, a, host, path, nil)
					l.mu.Lock()
					l.samples = append(l.samples, trafficSample{at, r})
					l.mu.Unlock()
				}()
			}
		}
	}()
	return l
}

// snapshot returns the requests answered so far, in the order they were sent.
func (l *trafficLoad) snapshot() []trafficSample {
	l.mu.Lock()
	out := append([]trafficSample(nil), l.samples...)
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// finish stops the load, waits for the requests in flight and returns
// every sample, in the order they were sent.
func (l *trafficLoad) finish() []trafficSample {
	close(l.stop)
	<-l.done
	return l.snapshot()
}

// switchedAt returns when the samples switched to good for good: the send
// time of the first request after the last one that was not good. ok is
// false while the last request is not good.
func switchedAt(samples []trafficSample, good func(trafficSample) bool) (at time.Time, ok bool) {
	last := -1
	for i, s := range samples {
		if !good(s) {
			last = i
		}
	}
	if last == len(samples)-1 {
		return time.Time{}, false
	}
	return samples[last+1].at, true
}

// failures describes the samples that did not get a 200.
func failures(samples []trafficSample) []string {
	var out []string
	for _, s := range samples {
		if s.err != nil || s.code != http.StatusOK {
			out = append(out, fmt.Sprintf("%s: %s", s.at.Format("15:04:05.000"), s.trafficResult))
		}
	}
	return out
}

// scrapeMetric sums the samples of metric name on the agent's /metrics
// whose labels include every one of labels (`key="value"`).
func scrapeMetric(t *testing.T, a *proxyAgent, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.httpAddr + "/metrics")
	if err != nil {
		t.Fatalf("%s: GET /metrics: %v", a.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET /metrics: %s %v", a.name, resp.Status, err)
	}
	var sum float64
next:
	for _, line := range strings.Split(string(b), "\n") {
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(series, l) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("%s: metric line %q: %v", a.name, line, err)
		}
		sum += v
	}
	return sum
}

// pollMetric waits until the metric reaches at least min and returns it.
func pollMetric(t *testing.T, a *proxyAgent, min float64, name string, labels ...string) float64 {
	t.Helper()
	var v float64
	testutil.WaitState(t, 5*time.Second, 100*time.Millisecond, fmt.Sprintf("%s%v ≥ %v on %s", name, labels, min, a.name), func() (bool, string) {
		v = scrapeMetric(t, a, name, labels...)
		return v >= min, fmt.Sprint(v)
	})
	return v
}
