package lb

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// subsetInstance publishes a backend as an instance in the given subsets.
func subsetInstance(b *backend, subsets ...string) Instance {
	in := b.instance()
	in.Subsets = subsets
	return in
}

func mustTable(t testing.TB, r Routing) *Table {
	t.Helper()
	tb, err := NewTable(r)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestRoutedSplitAndHeaderRoute sends requests through a router (a header
// route to v2) and a 90/10 splitter over subsets: the header route always
// reaches v2, the rest split 90/10, and the route and subset counters say
// so.
func TestRoutedSplitAndHeaderRoute(t *testing.T) {
	v := newFakeView()
	b1, b2 := newBackend(t, "v1"), newBackend(t, "v2")
	v.Set("web", subsetInstance(b1, "v1"), subsetInstance(b2, "v2"))
	p := startProxy(t, testConfig(), v)
	p.SetTable(mustTable(t, Routing{Chains: map[string]Chain{"web": {
		Routes:  []Route{{Match: RouteMatch{Headers: []HeaderMatch{{Name: "X-Canary", Exact: "1"}}}, Splits: []Split{split("web", "v2", 100)}}},
		Default: []Split{split("web", "v1", 90), split("web", "v2", 10)},
	}}}))
	pc := newProxyClient(t, p)

	for range 50 {
		req, _ := http.NewRequest("GET", "http://"+pc.addr+"/", nil)
		req.Host, req.Header = "web", http.Header{"X-Canary": {"1"}}
		resp, err := pc.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "v2" {
			t.Fatalf("canary request answered by %q, want v2", body)
		}
	}
	const n = 4000
	got := map[string]int{}
	for range n {
		_, body := pc.get(t, "web", "/")
		got[body]++
	}
	if share := float64(got["v2"]) / n; share < 0.08 || share > 0.12 {
		t.Errorf("v2 got %d of %d requests (%.3f), want about 10%%", got["v2"], n, share)
	}
	routes := map[string]DecisionStats{}
	for _, s := range p.RouteStats() {
		routes[s.Name] = s
	}
	if routes["0"].Requests != 50 || routes["default"].Requests != n {
		t.Errorf("route stats %+v, want 50 on route 0 and %d on the default", routes, n)
	}
	subsets := map[string]uint64{}
	for _, s := range p.SubsetStats() {
		subsets[s.Name] = s.Requests
	}
	if subsets["v1"]+subsets["v2"] != n+50 || subsets["v2"] < 50 {
		t.Errorf("subset stats %v, want %d in all", subsets, n+50)
	}
}

// TestRoutedRewriteAndHeaders checks PrefixRewrite and the request and
// response header changes of a route and its split leg, over HTTP/1 and
// h2c alike.
func TestRoutedRewriteAndHeaders(t *testing.T) {
	v := newFakeView()
	api := newBackend(t, "api")
	api.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("X-Version", "1")
		fmt.Fprintf(w, "%s|%s|%s|%s", r.RequestURI, r.Header.Get("X-Route"), strings.Join(r.Header.Values("X-Added"), ","), r.Header.Get("X-Drop"))
	})
	v.Set("api", api.instance())
	v.Set("web", newBackend(t, "web").instance())
	p := startProxy(t, testConfig(), v)
	p.SetTable(mustTable(t, Routing{Chains: map[string]Chain{"web": {Routes: []Route{{
		Match:          RouteMatch{PathPrefix: "/api/"},
		PrefixRewrite:  "/v2/",
		RequestHeaders: HeaderOps{Set: map[string]string{"X-Route": "api"}, Remove: []string{"X-Drop"}},
		ResponseHeaders: HeaderOps{Remove: []string{"X-Internal"}, Set: map[string]string{"X-Version": "2"},
			Add: map[string]string{"X-Served-By": "shoal"}},
		Splits: []Split{{Weight: 100, Target: Target{Service: "api"}, RequestHeaders: HeaderOps{Add: map[string]string{"X-Added": "leg"}}}},
	}}}}}))
	check := func(name string, resp *http.Response, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "/v2/users?id=7|api|client,leg|"; string(body) != want {
			t.Errorf("%s: the instance saw %q, want %q", name, body, want)
		}
		if h := resp.Header; h.Get("X-Internal") != "" || h.Get("X-Version") != "2" || h.Get("X-Served-By") != "shoal" {
			t.Errorf("%s: answer headers %v", name, h)
		}
	}
	newReq := func() *http.Request {
		req, _ := http.NewRequest("GET", "http://web/api/users?id=7", nil)
		req.Header.Set("x-route", "client") // replaced, whatever its case
		req.Header.Set("X-Added", "client")
		req.Header.Set("X-Drop", "gone")
		return req
	}
	pc := newProxyClient(t, p)
	req := newReq()
	req.URL.Host = pc.addr
	req.Host = "web"
	resp, err := pc.c.Do(req)
	check("HTTP/1", resp, err)
	resp, err = h2cClient(t, p).Do(newReq())
	check("h2c", resp, err)

	if status, body := pc.get(t, "web", "/other"); status != 200 || body != "web" {
		t.Errorf("a path no route takes: %d %q, want web's answer", status, body)
	}
}

// TestRoutedTimeoutAndRetry checks a route's RequestTimeout (504, counted)
// and its retry on a status, which rescues requests an instance fails.
func TestRoutedTimeoutAndRetry(t *testing.T) {
	v := newFakeView()
	slow, bad, good := newBackend(t, "slow"), newBackend(t, "bad"), newBackend(t, "good")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow.handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	bad.handle(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) })
	v.Set("slow", slow.instance())
	v.Set("flaky", bad.instance(), good.instance())
	cfg := testConfig()
	cfg.Policy = PolicyRoundRobin
	cfg.MinRetriesPerSecond = 1000 // half the requests retry: more than the budget allows at this rate
	p := startProxy(t, cfg, v)
	p.SetTable(mustTable(t, Routing{Chains: map[string]Chain{
		"slow": {Routes: []Route{{Match: RouteMatch{PathPrefix: "/"}, RequestTimeout: 150 * time.Millisecond,
			Splits: []Split{split("slow", "", 100)}}}},
		"flaky": {Routes: []Route{{Match: RouteMatch{PathPrefix: "/retry"}, Retry: &RetryPolicy{NumRetries: 1, OnStatus: []int{503}},
			Splits: []Split{split("flaky", "", 100)}}}},
	}}))
	pc := newProxyClient(t, p)

	start := time.Now()
	status, body := pc.get(t, "slow", "/")
	if took := time.Since(start); status != http.StatusGatewayTimeout || took > 5*time.Second {
		t.Errorf("slow route: %d %q after %v, want 504 after about 150ms", status, body, took)
	}
	resp, err := h2cClient(t, p).Get("http://slow/")
	if err != nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("slow route over h2c: %v %v, want 504", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	for _, s := range p.RouteStats() {
		if s.Service == "slow" && s.Name == "0" && s.Timeouts != 2 {
			t.Errorf("slow route counted %d timeouts, want 2", s.Timeouts)
		}
	}

	for i := range 20 {
		if status, body := pc.get(t, "flaky", "/retry"); status != 200 || body != "good" {
			t.Fatalf("request %d on the retrying route: %d %q", i, status, body)
		}
	}
	failed := 0
	for range 20 {
		if status, _ := pc.get(t, "flaky", "/plain"); status == http.StatusServiceUnavailable {
			failed++
		}
	}
	if failed == 0 {
		t.Error("without the route's retry no request got the 503: the test proves nothing")
	}
	var retries uint64
	for _, s := range p.RouteStats() {
		if s.Service == "flaky" && s.Name == "0" {
			retries = s.Retries
		}
	}
	if retries < 5 {
		t.Errorf("the retrying route counted %d retries, want about 10", retries)
	}
}

// TestFailoverAndBack sends traffic to a service with a failover target:
// while the service has no instance the failover takes the traffic, and
// it comes back when an instance does.
func TestFailoverAndBack(t *testing.T) {
	v := newFakeView()
	primary, backup := newBackend(t, "primary"), newBackend(t, "backup")
	v.Set("web", primary.instance())
	v.Set("backup", backup.instance())
	p := startProxy(t, testConfig(), v)
	p.SetTable(mustTable(t, Routing{
		Chains:  map[string]Chain{"web": {}},
		Targets: map[Target]Resolved{{Service: "web"}: {Failover: []Target{{Service: "backup"}}}},
	}))
	pc := newProxyClient(t, p)
	expect := func(want string) {
		t.Helper()
		for range 5 {
			if status, body := pc.get(t, "web", "/"); status != 200 || body != want {
				t.Fatalf("got %d %q, want %s", status, body, want)
			}
		}
	}
	expect("primary")
	v.Set("web") // every instance critical: out of the view
	expect("backup")
	v.Set("web", primary.instance())
	expect("primary")
	v.Set("web")
	v.Set("backup")
	if status, body := pc.get(t, "web", "/"); status != http.StatusServiceUnavailable || !strings.Contains(body, `"web"`) {
		t.Errorf("nothing anywhere: %d %q, want 503 naming web", status, body)
	}
}

// TestTCPUpstreamSplits checks that TCP connections take the splitter and
// the resolver's subsets, per connection.
func TestTCPUpstreamSplits(t *testing.T) {
	v := newFakeView()
	oldB, newB := newEchoBackend(t, "old"), newEchoBackend(t, "new")
	v.Set("db", Instance{ID: "old", Addr: oldB.ln.Addr().String(), Weight: 1, Subsets: []string{"old"}},
		Instance{ID: "new", Addr: newB.ln.Addr().String(), Weight: 1, Subsets: []string{"new"}})
	cfg := testConfig()
	cfg.Upstreams = map[string]string{"db": "127.0.0.1:0"}
	p := startProxy(t, cfg, v)
	setSplit := func(oldW float64) {
		p.SetTable(mustTable(t, Routing{Chains: map[string]Chain{"db": {Default: []Split{split("db", "old", oldW), split("db", "new", 100-oldW)}}}}))
	}
	ask := func() string {
		t.Helper()
		c, err := net.Dial("tcp", p.UpstreamAddr("db"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "hi\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(line)[0]
	}
	setSplit(100)
	for range 10 {
		if got := ask(); got != "old" {
			t.Fatalf("100/0 split answered by %s", got)
		}
	}
	setSplit(0)
	for range 10 {
		if got := ask(); got != "new" {
			t.Fatalf("0/100 split answered by %s", got)
		}
	}
}

// TestTableSwapUnderLoad moves a split from 100/0 to 0/100 while requests
// run: none fails, and every request after the swap goes to the new leg.
func TestTableSwapUnderLoad(t *testing.T) {
	v := newFakeView()
	b1, b2 := newBackend(t, "v1"), newBackend(t, "v2")
	v.Set("web", subsetInstance(b1, "v1"), subsetInstance(b2, "v2"))
	p := startProxy(t, testConfig(), v)
	table := func(w1 float64) *Table {
		return mustTable(t, Routing{Chains: map[string]Chain{"web": {Default: []Split{split("web", "v1", w1), split("web", "v2", 100-w1)}}}})
	}
	p.SetTable(table(100))
	pc := newProxyClient(t, p)
	var swapped atomic.Bool
	var failed, lateV1 atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				after := swapped.Load()
				status, body, err := pc.try("GET", "web", "/", nil)
				if err != nil || status != 200 {
					failed.Add(1)
				} else if after && body == "v1" {
					lateV1.Add(1)
				}
			}
		})
	}
	waitFor(t, 5*time.Second, "traffic on v1", func() bool { return b1.hits.Load() > 100 })
	p.SetTable(table(0))
	swapped.Store(true)
	waitFor(t, 5*time.Second, "traffic on v2", func() bool { return b2.hits.Load() > 100 })
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || lateV1.Load() != 0 {
		t.Errorf("%d requests failed and %d went to v1 after the swap, want 0 and 0", failed.Load(), lateV1.Load())
	}
}

// TestDebugHeaders checks the opt-in answer headers naming what served.
func TestDebugHeaders(t *testing.T) {
	v := newFakeView()
	b := newBackend(t, "a")
	in := subsetInstance(b, "v1")
	in.Zone = "z1"
	v.Set("web", in)
	cfg := testConfig()
	cfg.DebugHeaders = true
	p := startProxy(t, cfg, v)
	p.SetTable(mustTable(t, Routing{Chains: map[string]Chain{"web": {Default: []Split{split("web", "v1", 100)}}}}))
	req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr()+"/", nil)
	req.Host = "web"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get(debugInstance); got != "a" {
		t.Errorf("%s = %q, want a", debugInstance, got)
	}
	if got := resp.Header.Get(debugRoute); got != "route=default target=web/v1 zone=z1" {
		t.Errorf("%s = %q", debugRoute, got)
	}
}

// TestUpstreamListenerSpeaksHTTP: the TCP upstream listener of a service
// whose protocol is HTTP's routes each request by the service's chain
// (HTTP/1 and h2c alike, whatever Host the client sends); without the
// protocol it pipes bytes as before.
func TestUpstreamListenerSpeaksHTTP(t *testing.T) {
	v := newFakeView()
	web, api := newBackend(t, "web"), newBackend(t, "api")
	api.handle(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "api %s", r.URL.Path) })
	v.Set("web", web.instance())
	v.Set("api", api.instance())
	cfg := testConfig()
	cfg.Upstreams = map[string]string{"web": "127.0.0.1:0"}
	p := startProxy(t, cfg, v)
	routing := func(proto string) *Table {
		return mustTable(t, Routing{
			Chains: map[string]Chain{"web": {Routes: []Route{{Match: RouteMatch{PathPrefix: "/api/"}, PrefixRewrite: "/",
				Splits: []Split{split("api", "", 100)}}}}},
			Protocols: map[string]string{"web": proto},
		})
	}
	p.SetTable(routing("http"))
	up := p.UpstreamAddr("web")
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections) // before the proxy's shutdown waits for its sessions
	for path, want := range map[string]string{"/api/users": "api /users", "/": "web"} {
		resp, err := client.Get("http://" + up + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Errorf("HTTP/1 %s through the upstream listener: %q, want %q", path, body, want)
		}
	}
	h2 := h2cClient(t, p)
	h2.Transport.(*http2.Transport).DialTLSContext = func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, up)
	}
	resp, err := h2.Get("http://anything/api/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "api /x" {
		t.Errorf("h2c through the upstream listener: %s %q, want HTTP/2 and api /x", resp.Proto, body)
	}
	var routed uint64
	for _, s := range p.RouteStats() {
		if s.Service == "web" && s.Name == "0" {
			routed = s.Requests
		}
	}
	if routed != 2 {
		t.Errorf("route 0 counted %d requests, want 2", routed)
	}

	// As TCP, the listener passes the request through untouched: the path
	// goes to web, not to the route.
	p.SetTable(routing("tcp"))
	client.CloseIdleConnections()
	resp, err = client.Get("http://" + up + "/api/users")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "web" {
		t.Errorf("over TCP: %q, want web", body)
	}
}

// TestFailoverWhenConnectsFail: a target whose instances are in the view
// but take no connection (nothing listens, or passive health ejected them)
// fails over too: the very first request goes on to the failover target
// once its connects fail, and later ones go there at once while the
// instance is ejected. TCP connections alike.
func TestFailoverWhenConnectsFail(t *testing.T) {
	v := newFakeView()
	backup := newBackend(t, "backup")
	dead := newBackend(t, "dead")
	deadAddr := dead.addr()
	dead.srv.Close() // refuses connections from now on
	v.Set("web", inst("dead", deadAddr))
	v.Set("backup", backup.instance())
	echo := newEchoBackend(t, "backup-tcp")
	v.Set("db", inst("dead", deadAddr))
	v.Set("db-backup", Instance{ID: "b", Addr: echo.ln.Addr().String(), Weight: 1})
	cfg := testConfig()
	cfg.Upstreams = map[string]string{"db": "127.0.0.1:0"}
	p := startProxy(t, cfg, v)
	p.SetTable(mustTable(t, Routing{
		Chains: map[string]Chain{"web": {}, "db": {}},
		Targets: map[Target]Resolved{
			{Service: "web"}: {Failover: []Target{{Service: "nowhere"}, {Service: "backup"}}},
			{Service: "db"}:  {Failover: []Target{{Service: "db-backup"}}},
		},
	}))
	pc := newProxyClient(t, p)
	for i := range 5 {
		if status, body := pc.get(t, "web", "/"); status != 200 || body != "backup" {
			t.Fatalf("request %d: %d %q, want backup's answer", i, status, body)
		}
	}
	c, err := net.Dial("tcp", p.UpstreamAddr("db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hi\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "backup-tcp hi\n" {
		t.Errorf("TCP through a dead target: %q %v, want the failover's echo", line, err)
	}
	// Without failover the same dead target is a 502.
	p.SetTable(mustTable(t, Routing{Chains: map[string]Chain{"web": {}}}))
	if status, _ := pc.get(t, "web", "/"); status != http.StatusBadGateway {
		t.Errorf("no failover: %d, want 502", status)
	}
}
