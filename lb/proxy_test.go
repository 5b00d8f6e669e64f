package lb

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// threeBackends starts backends a, b and c and publishes them as "web".
func threeBackends(t *testing.T, v *fakeView) []*backend {
	t.Helper()
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
	v.Set("web", bs[0].instance(), bs[1].instance(), bs[2].instance())
	return bs
}

func roundRobinConfig() Config {
	cfg := testConfig()
	cfg.Policy = PolicyRoundRobin
	return cfg
}

func TestProxyRoutesByHost(t *testing.T) {
	v := newFakeView()
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	v.Set("web", a.instance("v1"), b.instance("v2"), c.instance("v1", "canary"))
	p := startProxy(t, roundRobinConfig(), v)
	pc := newProxyClient(t, p)

	tests := []struct {
		host string
		want string // the backends that may answer
	}{
		{"web", "abc"},
		{"web:15001", "abc"},
		{"web.service.shoal", "abc"},
		{"web.service.shoal.", "abc"},
		{"v1.web.service.shoal", "ac"},
		{"v2.web.service.shoal", "b"},
		{"canary.web.service.shoal:80", "c"},
	}
	for _, tt := range tests {
		seen := map[string]bool{}
		for range 12 {
			status, body := pc.get(t, tt.host, "/")
			if status != http.StatusOK || len(body) != 1 || !strings.Contains(tt.want, body) {
				t.Fatalf("Host %s: %d %q, want 200 from one of %q", tt.host, status, body, tt.want)
			}
			seen[body] = true
		}
		if len(seen) != len(tt.want) {
			t.Errorf("Host %s reached %v, want all of %q", tt.host, seen, tt.want)
		}
	}

	// A tag nobody has is a service with no instances.
	if status, body := pc.get(t, "v3.web.service.shoal", "/"); status != http.StatusServiceUnavailable {
		t.Errorf("unknown tag: %d %q, want 503", status, body)
	}
}

func TestProxyAbsoluteForm(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	var gotPath, gotHost, gotQuery atomic.Value
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		gotPath.Store(r.URL.Path)
		gotQuery.Store(r.URL.RawQuery)
		gotHost.Store(r.Host)
		io.WriteString(w, "a")
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)

	// Like HTTP_PROXY=http://127.0.0.1:15001 in the application.
	proxyURL, _ := url.Parse("http://" + p.HTTPAddr())
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for _, target := range []string{"http://web/path?q=1", "http://web.service.shoal:8080/path?q=1"} {
		resp, err := client.Get(target)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "a" {
			t.Fatalf("GET %s via proxy: %d %q", target, resp.StatusCode, body)
		}
		u, _ := url.Parse(target)
		if gotPath.Load() != "/path" || gotQuery.Load() != "q=1" || gotHost.Load() != u.Host {
			t.Fatalf("backend saw path %v query %v host %v", gotPath.Load(), gotQuery.Load(), gotHost.Load())
		}
	}
}

func TestProxyUnknownAndInvalidHosts(t *testing.T) {
	v := newFakeView()
	threeBackends(t, v)
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)

	tests := []struct{ host, mention string }{
		{"nosuch", `"nosuch"`},
		{"nosuch.service.shoal", `"nosuch"`},
		{"example.com", `"example.com"`},
		{"a.b.c.service.shoal", `"a.b.c.service.shoal"`},
		{"[::1]:80", `"[::1]:80"`},
	}
	for _, tt := range tests {
		status, body := pc.get(t, tt.host, "/")
		if status != http.StatusServiceUnavailable {
			t.Errorf("Host %s: status %d, want 503", tt.host, status)
		}
		if strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") || !strings.Contains(body, tt.mention) {
			t.Errorf("Host %s: body %q, want one line naming %s", tt.host, body, tt.mention)
		}
	}
}

func TestProxyRoundRobinIsEven(t *testing.T) {
	v := newFakeView()
	bs := threeBackends(t, v)
	p := startProxy(t, roundRobinConfig(), v)
	pc := newProxyClient(t, p)

	const total, workers = 3000, 8
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if status, _ := pc.get(t, "web", "/"); status != http.StatusOK {
					t.Errorf("status %d", status)
				}
			}
		}()
	}
	wg.Wait()
	for _, b := range bs {
		if n := b.hits.Load(); n < 900 || n > 1100 {
			t.Errorf("backend %s: %d of %d requests, want 1000 ± 10%%", b.name, n, total)
		}
	}
	if st := p.Stats(); st.Requests != total || st.Errors != 0 || st.Retries != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestProxyHashByHeader(t *testing.T) {
	v := newFakeView()
	threeBackends(t, v)
	cfg := testConfig()
	cfg.Policy = PolicyHash
	cfg.HashKey = "header:X-User"
	p := startProxy(t, cfg, v)
	pc := newProxyClient(t, p)
	owner := map[string]string{}
	for round := range 3 {
		for u := range 30 {
			req, _ := http.NewRequest("GET", "http://"+pc.addr+"/", nil)
			req.Host = "web"
			user := fmt.Sprint("user", u)
			req.Header.Set("X-User", user)
			resp, err := pc.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if round == 0 {
				owner[user] = string(body)
			} else if owner[user] != string(body) {
				t.Fatalf("%s went to %s, then to %s", user, owner[user], body)
			}
		}
	}
	per := map[string]int{}
	for _, o := range owner {
		per[o]++
	}
	if len(per) < 2 {
		t.Fatalf("30 users all hashed to %v", per)
	}
}

func TestProxyHeaders(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	seen := make(chan http.Header, 1)
	var seenHost atomic.Value
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		seenHost.Store(r.Host)
		seen <- r.Header.Clone()
		w.Header().Set("Connection", "X-Bar")
		w.Header().Set("X-Bar", "hop")
		w.Header().Set("X-Baz", "end-to-end")
		io.WriteString(w, "a")
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)

	req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr()+"/", nil)
	req.Host = "web.service.shoal"
	req.Header.Set("Connection", "X-Foo")
	req.Header.Set("X-Foo", "hop")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("X-Keep", "end-to-end")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h := <-seen

	if got := seenHost.Load(); got != "web.service.shoal" {
		t.Errorf("backend saw Host %v, want the original", got)
	}
	for name, want := range map[string]string{
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "web.service.shoal",
		"X-Keep":            "end-to-end",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("backend saw %s: %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"X-Foo", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection"} {
		if got := h.Values(name); len(got) != 0 {
			t.Errorf("hop-by-hop header %s reached the backend: %q", name, got)
		}
	}
	if got := h.Get("Connection"); strings.Contains(got, "X-Foo") {
		t.Errorf("backend saw Connection: %q", got)
	}
	if resp.Header.Get("X-Bar") != "" || resp.Header.Get("X-Baz") != "end-to-end" {
		t.Errorf("response headers: %v", resp.Header)
	}
}

func TestProxyStreamsRequestBody(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	first := make(chan string, 1)
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		first <- string(buf)
		rest, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%s%s", buf, rest)
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)

	pr, pw := io.Pipe()
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		status, body, err := pc.try(http.MethodPost, "web", "/upload", pr)
		done <- result{status, body, err}
	}()
	if _, err := pw.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-first:
		if got != "first" {
			t.Fatalf("backend's first chunk: %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backend did not see the first chunk while the client was still sending: the proxy buffers request bodies")
	}
	// A larger tail, still streamed.
	tail := strings.Repeat("x", 1<<20)
	if _, err := io.WriteString(pw, tail); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.err != nil || r.status != http.StatusOK || r.body != "first"+tail {
		t.Fatalf("upload: %d (%d bytes) %v", r.status, len(r.body), r.err)
	}
}

func TestProxyStreamsResponse(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	clientGotFirst := make(chan struct{})
	var backendGaveUp atomic.Bool
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tick")
		w.(http.Flusher).Flush()
		select {
		case <-clientGotFirst:
		case <-time.After(10 * time.Second):
			backendGaveUp.Store(true)
		}
		io.WriteString(w, "tock")
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)

	req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr()+"/events", nil)
	req.Host = "web"
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	if backendGaveUp.Load() {
		t.Fatal("the first chunk arrived only after the backend finished: the proxy buffers responses")
	}
	close(clientGotFirst)
	rest, err := io.ReadAll(resp.Body)
	if string(buf)+string(rest) != "ticktock" || err != nil {
		t.Fatalf("body %q%q, %v", buf, rest, err)
	}
}

func TestProxyChunkedAndTrailers(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Checksum", "c0ffee")
		w.Header().Set(http.TrailerPrefix+"X-Late", "announced-late")
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)

	req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr()+"/", nil)
	req.Host = "web"
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "part0;part1;part2;" {
		t.Fatalf("body %q, %v", body, err)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("transfer encoding %v, want chunked", resp.TransferEncoding)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "c0ffee" {
		t.Errorf("trailer X-Checksum = %q (trailers %v)", got, resp.Trailer)
	}
	if got := resp.Trailer.Get("X-Late"); got != "announced-late" {
		t.Errorf("trailer X-Late = %q (trailers %v)", got, resp.Trailer)
	}
}

func TestProxyUpgrade(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo until the client goes
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)

	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "echo" {
		t.Fatalf("upgrade answer: %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello\n", "again\n"} {
		io.WriteString(c, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo: %q, %v", got, err)
		}
	}
	ep := p.pool("web", "").current().all.eps[0]
	if ep.inflight.Load() != 1 {
		t.Errorf("upgraded connection not counted in flight: %d", ep.inflight.Load())
	}
	c.Close()
	waitFor(t, 5*time.Second, "in-flight count back to 0 after the upgraded connection closed", func() bool {
		return ep.inflight.Load() == 0
	})
}

// h2cClient speaks HTTP/2 with prior knowledge to the proxy, whatever the
// URL's host.
func h2cClient(t testing.TB, p *Proxy) *http.Client {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, p.HTTPAddr())
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestProxyH2C(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	a.handle(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "a %s %s %s", r.Host, r.Header.Get("X-Forwarded-For"), body)
	})
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)
	client := h2cClient(t, p)
	for i, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, "http://web.service.shoal/h2", strings.NewReader(fmt.Sprint("body", i)))
		if method == "GET" {
			req.Body, req.ContentLength = nil, 0
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := "a web.service.shoal 127.0.0.1 "
		if method == "POST" {
			want += "body1"
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || string(body) != want {
			t.Fatalf("%s over h2c: %s %d %q, want HTTP/2 200 %q", method, resp.Proto, resp.StatusCode, body, want)
		}
	}
}

// TestProxyH2CErrors: the h2c path answers failures like the HTTP/1 path.
func TestProxyH2CErrors(t *testing.T) {
	v := newFakeView()
	slow := newBackend(t, "a")
	slow.handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	})
	v.Set("slow", slow.instance())
	dead := newBackend(t, "b")
	dead.srv.Close()
	v.Set("dead", dead.instance())
	cfg := testConfig()
	cfg.Timeout = 150 * time.Millisecond
	p := startProxy(t, cfg, v)
	client := h2cClient(t, p)

	for _, tt := range []struct {
		host string
		want int
	}{
		{"nosuch", http.StatusServiceUnavailable},
		{"example.com", http.StatusServiceUnavailable},
		{"slow", http.StatusGatewayTimeout},
		{"dead", http.StatusBadGateway},
	} {
		resp, err := client.Get("http://" + tt.host + "/")
		if err != nil {
			t.Fatalf("%s: %v", tt.host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want || strings.Count(string(body), "\n") != 1 {
			t.Errorf("h2c GET %s: %d %q, want %d and one line", tt.host, resp.StatusCode, body, tt.want)
		}
	}
}

func TestProxyKeepAlive(t *testing.T) {
	v := newFakeView()
	a := newBackend(t, "a")
	v.Set("web", a.instance())
	p := startProxy(t, testConfig(), v)
	pc := newProxyClient(t, p)
	for range 200 {
		if status, _ := pc.get(t, "web", "/"); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
	}
	if n := a.conns.Load(); n > 2 {
		t.Fatalf("200 sequential requests opened %d backend connections, want ≤ 2", n)
	}
	// Concurrency opens more, but they are pooled too.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				pc.get(t, "web", "/")
			}
		}()
	}
	wg.Wait()
	if n := a.conns.Load(); n > 20 {
		t.Fatalf("400 requests from 8 clients opened %d backend connections", n)
	}
}

func TestProxyConnect(t *testing.T) {
	v := newFakeView()
	b := newEchoBackend(t, "a")
	v.Set("web", b.instance())
	p := startProxy(t, testConfig(), v)

	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The first line of the tunnel rides along with the CONNECT request.
	io.WriteString(c, "CONNECT web:443 HTTP/1.1\r\nHost: web:443\r\n\r\nearly\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s", resp.Status)
	}
	for _, want := range []string{"a early\n"} {
		if got, err := br.ReadString('\n'); got != want || err != nil {
			t.Fatalf("tunnel: %q, %v; want %q", got, err, want)
		}
	}
	io.WriteString(c, "later\n")
	if got, err := br.ReadString('\n'); got != "a later\n" || err != nil {
		t.Fatalf("tunnel: %q, %v", got, err)
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, _ := io.ReadAll(br); string(rest) != "a bye\n" {
		t.Fatalf("after half-close: %q", rest)
	}

	// CONNECT to a service with no instances.
	c2, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c2, "CONNECT nosuch:443 HTTP/1.1\r\nHost: nosuch:443\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT to an unknown service: %s", resp.Status)
	}
}
