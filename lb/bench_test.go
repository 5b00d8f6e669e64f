package lb

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkProxyHTTP measures parallel keep-alive GETs through the proxy to
// a trivial backend. Allocations are the whole process's: client, proxy and
// backend; compare with BenchmarkDirectHTTP for the proxy's share.
func BenchmarkProxyHTTP(b *testing.B) {
	v := newFakeView()
	be := benchBackend(b)
	v.Set("web", inst("a", be.Listener.Addr().String()))
	p := startProxy(b, testConfig(), v)
	benchGET(b, p.HTTPAddr(), "web")
}

// BenchmarkDirectHTTP is the baseline: the same client and backend without
// the proxy.
func BenchmarkDirectHTTP(b *testing.B) {
	be := benchBackend(b)
	benchGET(b, be.Listener.Addr().String(), "web")
}

func benchBackend(b *testing.B) *httptest.Server {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	b.Cleanup(be.Close)
	return be
}

func benchGET(b *testing.B, addr, host string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + addr + "/"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		for pb.Next() {
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkPick measures one pick per policy over 3 and 100 endpoints with
// nothing ejected; the hash policy scores every endpoint, so it grows with n.
func BenchmarkPick(b *testing.B) {
	for _, pol := range allPolicies {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/%d", pol, n), func(b *testing.B) {
				p, _, s := policyPool(b, testConfig(), pol, uniform(n)...)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					if s.pick(p, new(selection), "user-42", nil) == nil {
						b.Fatal("nil pick")
					}
				}
			})
		}
	}
}

// BenchmarkPickWeighted is BenchmarkPick with unequal weights, which takes
// round robin onto its smooth schedule and random draws onto a binary search.
func BenchmarkPickWeighted(b *testing.B) {
	for _, pol := range []string{PolicyRoundRobin, PolicyRandom, PolicyLeastRequest} {
		b.Run(pol, func(b *testing.B) {
			weights := make([]int, 100)
			for i := range weights {
				weights[i] = 1 + i%7
			}
			p, _, s := policyPool(b, testConfig(), pol, weights...)
			b.ReportAllocs()
			for b.Loop() {
				s.pick(p, new(selection), "", nil)
			}
		})
	}
}

// BenchmarkProxyFastHTTP isolates the proxy's own allocations: the client
// and the backend are fasthttp's, which allocate nothing per request in
// steady state, so allocs/op is the proxy's.
func BenchmarkProxyFastHTTP(b *testing.B) {
	be := fastBackend(b)
	v := newFakeView()
	v.Set("web", inst("a", be))
	p := startProxy(b, testConfig(), v)
	benchFastGET(b, p, "/", nil)
}

// benchFastGET sends GET uri with the given extra headers to service web
// through the proxy, in parallel, with fasthttp's client.
func benchFastGET(b *testing.B, p *Proxy, uri string, headers map[string]string) {
	hc := &fasthttp.HostClient{Addr: p.HTTPAddr(), MaxConns: 1024}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.SetRequestURI(uri)
			req.Header.SetHost("web")
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			if err := hc.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != fasthttp.StatusOK {
				b.Errorf("status %d", resp.StatusCode())
				return
			}
		}
	})
}

// fastBackend starts a fasthttp server answering "ok" and returns its address.
func fastBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// BenchmarkProxyFastHTTPChurn is BenchmarkProxyFastHTTP while 100 other
// services change every second, as in a large, busy cluster: the web
// pool's generation does not move, so its requests never rebuild it.
func BenchmarkProxyFastHTTPChurn(b *testing.B) {
	be := fastBackend(b)
	v := newFakeView()
	v.Set("web", inst("a", be))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				v.Set(fmt.Sprintf("other-%d", i%1000), inst("x", "127.0.0.1:1"))
			}
		}
	}()
	b.Cleanup(func() { close(stop); <-done })
	p := startProxy(b, testConfig(), v)
	hc := &fasthttp.HostClient{Addr: p.HTTPAddr(), MaxConns: 1024}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("/")
		req.Header.SetHost("web")
		for pb.Next() {
			if err := hc.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
				b.Errorf("status %d, err %v", resp.StatusCode(), err)
				return
			}
		}
	})
}

// BenchmarkProxyFastHTTPRouted is BenchmarkProxyFastHTTP with a traffic
// policy on the service: one route (a path prefix and a header), a 50/50
// split over two subsets and a resolver; allocs/op must stay 0.
func BenchmarkProxyFastHTTPRouted(b *testing.B) {
	be := fastBackend(b)
	v := newFakeView()
	a, c := inst("a", be), inst("c", be)
	a.Subsets, c.Subsets = []string{"v1"}, []string{"v2"}
	v.Set("web", a, c)
	p := startProxy(b, testConfig(), v)
	p.SetTable(mustTable(b, benchRouting(1)))
	benchFastGET(b, p, "/api/users", map[string]string{"X-Canary": "0"})
}

// benchRouting is a chain for "web" with n routes: route i takes the path
// prefix /r<i>/ with header X-Canary 1, the last one /api/ whatever the
// header; the default splits 50/50 over subsets v1 and v2, whose resolver
// sets a policy and a connect timeout.
func benchRouting(n int) Routing {
	routes := make([]Route, n)
	for i := range routes {
		routes[i] = Route{
			Match:  RouteMatch{PathPrefix: fmt.Sprintf("/r%d/", i), Headers: []HeaderMatch{{Name: "X-Canary", Exact: "1"}}},
			Splits: []Split{split("web", "v2", 100)},
		}
	}
	routes[n-1].Match = RouteMatch{PathPrefix: "/api/"}
	routes[n-1].Splits = []Split{split("web", "v1", 50), split("web", "v2", 50)}
	return Routing{
		Chains:  map[string]Chain{"web": {Routes: routes, Default: []Split{split("web", "v1", 100)}}},
		Targets: map[Target]Resolved{{Service: "web"}: {Policy: PolicyLeastRequest, ConnectTimeout: time.Second}},
	}
}

// BenchmarkRouteMatch measures matching a request against a router of 1,
// 10 and 100 routes where only the last one matches (every route's path
// prefix is tested; the worst case short of the default), and the split
// draw that follows.
func BenchmarkRouteMatch(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ch := mustTable(b, benchRouting(n)).chainOf("web")
			var req fasthttp.Request
			req.SetRequestURI("/api/users?id=7")
			req.Header.SetHost("web")
			req.Header.Set("X-Canary", "0")
			fr := (*fastRequest)(&req)
			b.ReportAllocs()
			for b.Loop() {
				if ch.match(fr).pick().target.Service != "web" {
					b.Fatal("wrong route")
				}
			}
		})
	}
}

// BenchmarkDecide measures the whole routing decision of one HTTP/1
// request on a chain of one route, a 50/50 split and a resolver: the
// table load, the match, the draw, the target's pool and its snapshot.
// It is what the routed row of shoal-bench proxy adds to each request.
func BenchmarkDecide(b *testing.B) {
	v := newFakeView()
	a, c := inst("a", "127.0.0.1:1"), inst("c", "127.0.0.1:2")
	a.Subsets, c.Subsets = []string{"v1"}, []string{"v2"}
	v.Set("web", a, c)
	p := newTestProxy(b, testConfig(), v)
	p.SetTable(mustTable(b, benchRouting(1)))
	var req fasthttp.Request
	req.SetRequestURI("/api/users")
	req.Header.SetHost("web")
	b.ReportAllocs()
	for b.Loop() {
		d := p.decideFast(&req, "web", "")
		if len(d.pool.current().all.eps) != 1 {
			b.Fatal("no endpoint")
		}
	}
}
