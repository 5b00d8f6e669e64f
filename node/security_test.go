package node

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

const testToken = "s3cr3t-token"

// apiRoute is one route of the HTTP API as registered in api.go.
type apiRoute struct{ method, pattern string }

// apiRoutes reads every route registered on the API's mux in the
// package's sources (api.go and the files that add to it), so that a route
// added there is covered by the access tests without touching them.
func apiRoutes(t *testing.T) []apiRoute {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`mux\.Handle(?:Func)?\("([A-Z]+) ([^"]+)"`)
	var out []apiRoute
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			out = append(out, apiRoute{m[1], m[2]})
		}
	}
	if len(out) < 30 {
		t.Fatalf("found only %d routes: has the registration changed shape?", len(out))
	}
	return out
}

// path fills the route's wildcards with harmless values.
func (r apiRoute) path() string {
	return regexp.MustCompile(`\{[^}]+\}`).ReplaceAllStringFunc(r.pattern, func(w string) string {
		switch w {
		case "{$}":
			return ""
		case "{address}":
			return "127.0.0.1:1" // nothing listens: the join fails fast
		case "{state}":
			return "any"
		default:
			return "nope"
		}
	})
}

func (r apiRoute) write() bool { return r.method != http.MethodGet && r.method != http.MethodHead }

// request sends a request with extra headers and returns status and body.
func request(t *testing.T, a *Agent, method, path, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func withToken(reads bool) func(*Config) {
	return func(c *Config) {
		c.HTTP.Token = testToken
		c.HTTP.TokenReads = reads
	}
}

// TestTokenEnforcedOnEveryRoute walks every route of the API: with a token
// configured, each write is refused 403 without it (or with a wrong one)
// and passes the check with it, in each of the accepted forms; reads stay
// open unless TokenReads is set, except those that answer a secret.
func TestTokenEnforcedOnEveryRoute(t *testing.T) {
	routes := apiRoutes(t)
	for _, reads := range []bool{false, true} {
		name := "writes only"
		if reads {
			name = "reads too"
		}
		t.Run(name, func(t *testing.T) {
			a := startAgent(t, "n0", withToken(reads))
			register := func() {
				code, body := request(t, a, "PUT", "/v1/agent/service/register", `{"Name":"web"}`, map[string]string{"X-Consul-Token": testToken})
				if code != http.StatusOK {
					t.Fatalf("register with the token: %d %s", code, body)
				}
			}
			register()
			for _, rt := range routes {
				path := rt.path()
				if rt.pattern == "/v1/agent/leave" {
					// Leaving is tested last: it asks the agent to go.
					continue
				}
				t.Run(rt.method+" "+rt.pattern, func(t *testing.T) {
					needs := rt.write() || reads || secretPath(path)
					version := a.reg.current().Version
					for _, bad := range []map[string]string{
						nil,
						{"X-Consul-Token": "wrong"},
						{"Authorization": "Bearer wrong"},
						{"Authorization": "Basic " + testToken},
						{"X-Consul-Token": testToken + "x"},
					} {
						code, body := request(t, a, rt.method, path, `{}`, bad)
						if needs && code != http.StatusForbidden {
							t.Errorf("headers %v: status %d (%q), want 403", bad, code, body)
						}
						if needs && !strings.HasPrefix(body, "Permission denied: ") {
							t.Errorf("headers %v: reason %q, want \"Permission denied: ...\"", bad, body)
						}
						if !needs && code == http.StatusForbidden {
							t.Errorf("open route refused: %q", body)
						}
						checkOneLineReason403(t, code, body)
					}
					if v := a.reg.current().Version; v != version {
						t.Errorf("a refused request changed the catalog version from %d to %d", version, v)
					}
					for _, good := range []struct {
						header map[string]string
						query  string
					}{
						{map[string]string{"X-Consul-Token": testToken}, ""},
						{map[string]string{"Authorization": "Bearer " + testToken}, ""},
						{map[string]string{"Authorization": "bearer  " + testToken}, ""},
						{nil, "?token=" + testToken},
					} {
						p := path + good.query
						if strings.Contains(path, "?") {
							p = path + strings.Replace(good.query, "?", "&", 1)
						}
						code, body := request(t, a, rt.method, p, `{}`, good.header)
						if code == http.StatusForbidden {
							t.Errorf("with the token (%v%s): 403 %q", good.header, good.query, body)
						}
					}
					if strings.Contains(rt.pattern, "deregister") || strings.Contains(rt.pattern, "register") {
						register() // whatever the route removed, put it back
					}
				})
			}
			code, body := request(t, a, "PUT", "/v1/agent/leave", "", nil)
			if code != http.StatusForbidden {
				t.Errorf("leave without the token: %d %q", code, body)
			}
			select {
			case <-a.LeaveRequested():
				t.Fatal("a refused leave was acted on")
			default:
			}
			if code, body := request(t, a, "PUT", "/v1/agent/leave", "", map[string]string{"X-Consul-Token": testToken}); code != http.StatusOK {
				t.Errorf("leave with the token: %d %q", code, body)
			}
			<-a.LeaveRequested()
		})
	}
}

// TestAPIRefusalsCountedAndLoggedOnce: every 403 of the API's front door
// is counted by reason in /metrics and logged once per client and reason,
// and a refused request changes nothing.
func TestAPIRefusalsCountedAndLoggedOnce(t *testing.T) {
	logs := &testutil.LogBuffer{}
	a := startAgent(t, "n0", func(c *Config) {
		withToken(false)(c)
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	version := a.reg.current().Version
	want := map[string]int{refusedNoToken: 3, refusedWrongToken: 2, refusedHost: 1, refusedOrigin: 1}
	sends := map[string]map[string]string{
		refusedNoToken:    nil,
		refusedWrongToken: {"X-Consul-Token": "wrong"},
		refusedHost:       {"Host": "rebind.example:8500", "X-Consul-Token": testToken},
		refusedOrigin:     {"Origin": "https://evil.example", "X-Consul-Token": testToken},
	}
	for reason, n := range want {
		for range n {
			code, body := request(t, a, "PUT", "/v1/agent/service/register", `{"Name":"web"}`, sends[reason])
			if code != http.StatusForbidden {
				t.Fatalf("%s: %d %q, want 403", reason, code, body)
			}
		}
	}
	if v := a.reg.current().Version; v != version {
		t.Errorf("refused requests moved the catalog version from %d to %d", version, v)
	}
	fams := scrapeMetrics(t, a, "/metrics")
	for _, reason := range apiRefusalReasons {
		got, ok := metricValue(fams, "shoal_http_refused_total", map[string]string{"reason": reason})
		if !ok || got != float64(want[reason]) {
			t.Errorf("shoal_http_refused_total{reason=%q} = %v (present %v), want %d", reason, got, ok, want[reason])
		}
	}
	for _, reason := range apiRefusalReasons {
		if n := strings.Count(logs.String(), "reason="+reason+" "); n != 1 {
			t.Errorf("%d log lines with reason=%s, want one for the one client:\n%s", n, reason, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `client=127.0.0.1 reason=`) {
		t.Errorf("the refusal log does not name the client:\n%s", logs.String())
	}
}

func checkOneLineReason403(t *testing.T, code int, body string) {
	t.Helper()
	if code == http.StatusForbidden {
		checkOneLineReason(t, []byte(body))
	}
}

// TestNoTokenAPIIsOpen checks the default: without a token configured,
// writes need none.
func TestNoTokenAPIIsOpen(t *testing.T) {
	a := startAgent(t, "n0", nil)
	if code, body := request(t, a, "PUT", "/v1/agent/service/register", `{"Name":"web"}`, nil); code != http.StatusOK {
		t.Fatalf("register without a token on an open agent: %d %s", code, body)
	}
}

// TestHostHeaderCheck covers the DNS rebinding protection of a loopback API
// and the Origin check of writes.
func TestHostHeaderCheck(t *testing.T) {
	a := startAgent(t, "n0", func(c *Config) { c.HTTP.AllowedHosts = []string{"shoal.internal", "10.1.2.3"} })
	port := a.HTTPAddr()[strings.LastIndex(a.HTTPAddr(), ":"):]
	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{a.HTTPAddr(), true},
		{"127.0.0.1", true},
		{"localhost" + port, true},
		{"LocalHost.:80", true},
		{"127.0.0.2:8500", true},
		{"[::1]" + port, true},
		{"shoal.internal", true},
		{"SHOAL.internal:9999", true},
		{"10.1.2.3:8500", true},
		{"evil.example", false},
		{"evil.example" + port, false},
		{"127.0.0.1.nip.io" + port, false},
		{"localhost.evil.example", false},
		{"10.1.2.4", false},
		{"0.0.0.0" + port, false},
	} {
		for _, method := range []string{"GET", "PUT"} {
			path, body := "/v1/agent/services", ""
			if method == "PUT" {
				path, body = "/v1/agent/service/register", `{"Name":"web"}`
			}
			code, reason := request(t, a, method, path, body, map[string]string{"Host": tt.host})
			if tt.ok && code != http.StatusOK {
				t.Errorf("%s with Host %q: %d %q, want 200", method, tt.host, code, reason)
			}
			if !tt.ok && (code != http.StatusForbidden || !strings.Contains(reason, "DNS rebinding")) {
				t.Errorf("%s with Host %q: %d %q, want 403 naming DNS rebinding", method, tt.host, code, reason)
			}
		}
	}

	// HTTP/1.0 without a Host header is not a browser: it passes.
	conn, err := net.Dial("tcp", a.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /v1/agent/services HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("HTTP/1.0 request without Host: %v %v", resp, err)
	}

	for _, tt := range []struct {
		origin string
		ok     bool
	}{
		{"http://localhost:3000", true},
		{"http://127.0.0.1" + port, true},
		{"https://shoal.internal", true},
		{"https://evil.example", false},
		{"null", false},
		{"http://127.0.0.1.evil.example", false},
	} {
		code, reason := request(t, a, "PUT", "/v1/agent/service/register", `{"Name":"web"}`, map[string]string{"Origin": tt.origin})
		if tt.ok != (code == http.StatusOK) {
			t.Errorf("write with Origin %q: %d %q", tt.origin, code, reason)
		}
	}
	// Reads are not writes: a page may not read the answer anyway (no CORS).
	if code, _ := request(t, a, "GET", "/v1/agent/services", "", map[string]string{"Origin": "https://evil.example"}); code != http.StatusOK {
		t.Errorf("read with a foreign Origin: %d", code)
	}
}

// TestGuardNonLoopbackBind checks that the Host check applies to loopback
// binds only: an API bound to a LAN address is reached under names the
// agent cannot know.
func TestGuardNonLoopbackBind(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, tt := range []struct {
		bind, host string
		want       int
	}{
		{"10.0.0.5:8500", "shoal.lan:8500", http.StatusOK},
		{"0.0.0.0:8500", "anything", http.StatusOK},
		{"[::1]:8500", "anything", http.StatusForbidden},
		{"127.0.0.1:8500", "anything", http.StatusForbidden},
	} {
		h := newGuard(DefaultHTTPConfig(), tt.bind, nil).wrap(ok)
		req := httptest.NewRequest("GET", "/v1/agent/self", nil)
		req.Host = tt.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tt.want {
			t.Errorf("bind %s, Host %s: %d, want %d", tt.bind, tt.host, w.Code, tt.want)
		}
	}
}

// TestRequestToken checks where the token is looked for, in Consul's order.
func TestRequestToken(t *testing.T) {
	for _, tt := range []struct {
		header map[string]string
		query  string
		want   string
	}{
		{nil, "", ""},
		{map[string]string{"X-Consul-Token": "a"}, "", "a"},
		{map[string]string{"Authorization": "Bearer b"}, "", "b"},
		{map[string]string{"Authorization": "BEARER   b "}, "", "b"},
		{map[string]string{"Authorization": "Bearer "}, "", ""},
		{map[string]string{"Authorization": "Basic b"}, "", ""},
		{nil, "?token=c", "c"},
		{map[string]string{"X-Consul-Token": "a", "Authorization": "Bearer b"}, "?token=c", "a"},
		{map[string]string{"Authorization": "Bearer b"}, "?token=c", "b"},
	} {
		req := httptest.NewRequest("GET", "/v1/agent/self"+tt.query, nil)
		for k, v := range tt.header {
			req.Header.Set(k, v)
		}
		got, ok := requestToken(req)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("headers %v, query %q: %q %v, want %q", tt.header, tt.query, got, ok, tt.want)
		}
	}
}

// TestBadPathParams sends malformed and unknown IDs in paths: malformed ones
// (NUL, CR/LF, bidirectional overrides, too long, bad characters) are 400,
// unknown well-formed ones 404, and none changes anything.
func TestBadPathParams(t *testing.T) {
	a := startAgent(t, "n0", nil)
	register(t, a, `{"Name":"web","Check":{"CheckID":"web-ttl","TTL":"30s"}}`)
	version := a.reg.current().Version
	before := agentServicesRaw(t, a)
	long := strings.Repeat("a", maxIDLen+1)
	huge := strings.Repeat("a", maxPathSegment+1)
	type tc struct{ method, path string }
	var bad, unknown []tc
	for _, p := range []string{
		"/v1/agent/service/deregister/%s", "/v1/agent/service/%s", "/v1/agent/health/service/id/%s",
		"/v1/agent/service/maintenance/%s?enable=true", "/v1/agent/check/deregister/%s",
		"/v1/agent/check/pass/%s", "/v1/agent/check/warn/%s", "/v1/agent/check/fail/%s",
	} {
		method := "PUT"
		if strings.Contains(p, "/service/%s") || strings.Contains(p, "/id/") {
			method = "GET"
		}
		for _, id := range []string{"web%00", "web%0D%0AX-Injected:%201", "web%E2%80%AE", long, huge, "web%20x", "%FF"} {
			bad = append(bad, tc{method, strings.Replace(p, "%s", id, 1)})
		}
		unknown = append(unknown, tc{method, strings.Replace(p, "%s", "nope", 1)})
	}
	bad = append(bad,
		tc{"GET", "/v1/catalog/service/web%00"}, tc{"GET", "/v1/health/service/web%0A"},
		tc{"GET", "/v1/health/node/n0%E2%80%AE"}, tc{"GET", "/v1/catalog/node/" + huge},
		tc{"PUT", "/v1/agent/join/bad%20host"}, tc{"PUT", "/v1/agent/join/127.0.0.1:0"},
		tc{"PUT", "/v1/agent/join/127.0.0.1:65536"}, tc{"PUT", "/v1/agent/join/127.0.0.1:-1"},
	)
	for _, c := range bad {
		code, body := do(t, a, c.method, c.path, nil)
		if code != http.StatusBadRequest {
			t.Errorf("%s %s: %d %q, want 400", c.method, c.path, code, body)
		}
		checkOneLineReason(t, body)
	}
	for _, c := range unknown {
		if code, body := do(t, a, c.method, c.path, nil); code != http.StatusNotFound {
			t.Errorf("%s %s: %d %q, want 404", c.method, c.path, code, body)
		}
	}
	// The maintenance check IDs are well-formed check IDs.
	if code, body := do(t, a, "PUT", "/v1/agent/check/pass/_service_maintenance:web", nil); code != http.StatusNotFound {
		t.Errorf("pass on a maintenance check ID: %d %q, want 404 (no such check yet)", code, body)
	}
	if v := a.reg.current().Version; v != version {
		t.Errorf("catalog version moved from %d to %d", version, v)
	}
	if after := agentServicesRaw(t, a); string(after) != string(before) {
		t.Errorf("services changed:\n%s\n%s", before, after)
	}
}

// TestBadInputMore extends the bad-input table of api_validation_test.go to
// the other writes: check registration, TTL updates and the keyring.
func TestBadInputMore(t *testing.T) {
	a := startAgent(t, "n0", nil)
	register(t, a, `{"Name":"web","Check":{"CheckID":"web-ttl","TTL":"30s"}}`)
	version := a.reg.current().Version
	huge := `{"Name":"c","TTL":"10s","Notes":"` + strings.Repeat("x", maxBody) + `"}`
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"PUT", "/v1/agent/check/register", `{"Name":"c","TTL":"10s"`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":1,"TTL":"10s"}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c\u0000","TTL":"10s"}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","CheckID":"a\r\nb","TTL":"10s"}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","CheckID":"c\u202e","TTL":"10s"}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","TTL":"10s","ServiceID":"nope"}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","TTL":"forever"}`, 400},
		{"PUT", "/v1/agent/check/register", huge, 413},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","HTTP":"http://127.0.0.1/","Interval":"10s","Header":{"X":["a\r\nInjected: 1"]}}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","HTTP":"http://127.0.0.1/","Interval":"10s","Header":{"Bad Name":["a"]}}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","HTTP":"http://127.0.0.1/` + strings.Repeat("a", maxURLLen) + `","Interval":"10s"}`, 400},
		{"PUT", "/v1/agent/check/register", `{"Name":"c","HTTP":"http://127.0.0.1/","Interval":"10s","Body":"` + strings.Repeat("a", maxCheckBody+1) + `"}`, 400},
		{"PUT", "/v1/agent/service/register", `{"Name":"web2","Check":{"HTTP":"http://127.0.0.1/","Interval":"10s","Header":{"X":["a\nb"]}}}`, 400},
		{"PUT", "/v1/agent/check/update/web-ttl", `{"Status":"passing","Output":"a\u0000"}`, 400},
		{"PUT", "/v1/agent/check/update/web-ttl", `{"Status":"fine"}`, 400},
		{"PUT", "/v1/agent/check/update/web-ttl", `{"Status":1}`, 400},
		{"PUT", "/v1/agent/check/pass/web-ttl?note=a%0Db", "", 400},
		{"PUT", "/v1/agent/check/pass/web-ttl?note=" + strings.Repeat("a", maxCheckOutput+1), "", 400},
		{"PUT", "/v1/agent/service/maintenance/web?enable=yes%00", "", 400},
		{"PUT", "/v1/agent/service/maintenance/web?enable=true&reason=%E2%80%AE", "", 400},
		{"POST", "/v1/operator/keyring", `{"Key":"not base64!"}`, 400},
		{"POST", "/v1/operator/keyring", `{"Key":1}`, 400},
		{"POST", "/v1/operator/keyring", `{"Key":"` + strings.Repeat("A", maxBody) + `"}`, 413},
	} {
		code, body := do(t, a, tt.method, tt.path, tt.body)
		if code != tt.want {
			t.Errorf("%s %s %.60q: %d %q, want %d", tt.method, tt.path, tt.body, code, body, tt.want)
		}
		checkOneLineReason(t, body)
	}
	if v := a.reg.current().Version; v != version {
		t.Errorf("catalog version moved from %d to %d", version, v)
	}
	if svcs := agentServices(t, a); len(svcs) != 1 {
		t.Errorf("services = %v, want just web", svcs)
	}
	if cs := agentChecksOf(t, a); len(cs) != 1 || cs["web-ttl"].Status != "critical" {
		t.Errorf("checks = %v, want web-ttl critical only", cs)
	}
}

// TestPerClientConnectionCap opens connections up to the cap: the next one
// is closed at once, and a slot frees when a connection closes.
func TestPerClientConnectionCap(t *testing.T) {
	const limit = 4
	a := startAgent(t, "n0", func(c *Config) { c.HTTP.MaxConnsPerClient = limit })
	var conns []net.Conn
	for range limit {
		c, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	ln := perIPListenerOf(t, a)
	testutil.Wait(t, 5*time.Second, "the connections counted", func() bool { return ln.open("127.0.0.1") == limit })
	extra, err := net.Dial("tcp", a.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(extra, "GET /v1/agent/self HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if n, err := extra.Read(make([]byte, 1)); err == nil || n > 0 || isTimeout(err) {
		t.Errorf("connection over the cap: read %d bytes, %v; want it closed", n, err)
	}
	// The connections within the cap work.
	io.WriteString(conns[0], "GET /v1/agent/self HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conns[0]), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("connection within the cap: %v %v", resp, err)
	}
	conns[1].Close()
	testutil.Wait(t, 5*time.Second, "a slot freed", func() bool { return ln.open("127.0.0.1") == limit-1 })
	if code, _ := do(t, a, "GET", "/v1/agent/self", nil); code != http.StatusOK {
		t.Errorf("request after a slot freed: %d", code)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func perIPListenerOf(t *testing.T, a *Agent) *perIPListener {
	t.Helper()
	ln, ok := a.httpLn.(*perIPListener)
	if !ok {
		t.Fatalf("API listener is %T, want *perIPListener", a.httpLn)
	}
	return ln
}

// TestSlowClients checks the timeouts against slowloris-style clients, the
// header size limit, and that blocking queries outlast the read timeout.
func TestSlowClients(t *testing.T) {
	a := startAgent(t, "n0", func(c *Config) {
		c.HTTP.ReadHeaderTimeout = 300 * time.Millisecond
		c.HTTP.ReadTimeout = 600 * time.Millisecond
	})

	t.Run("headers never finished", func(t *testing.T) {
		conn, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /v1/agent/self HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		io.Copy(io.Discard, conn) // returns when the server closes
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("server held a connection with unfinished headers for %v", d)
		}
	})

	t.Run("body never finished", func(t *testing.T) {
		conn, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "PUT /v1/agent/service/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"Name\":")
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("server waited %v for a body", d)
		}
		if err == nil && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("unfinished body answered %d", resp.StatusCode)
		}
		if _, ok := a.reg.current().Services["web"]; ok {
			t.Error("an unfinished registration was stored")
		}
	})

	t.Run("huge headers", func(t *testing.T) {
		code, _ := request(t, a, "GET", "/v1/agent/self", "", map[string]string{"X-Big": strings.Repeat("a", 80<<10)})
		if code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("80 KiB of headers: %d, want 431", code)
		}
	})

	t.Run("blocking query outlasts the read timeout", func(t *testing.T) {
		index := a.Cluster().Catalog().Index()
		start := time.Now()
		code, body := do(t, a, "GET", "/v1/catalog/services?index="+strconv.FormatUint(index, 10)+"&wait=1500ms", nil)
		if code != http.StatusOK || !strings.HasPrefix(string(body), "{") {
			t.Fatalf("blocking query: %d %q", code, body)
		}
		if d := time.Since(start); d < 1400*time.Millisecond {
			t.Errorf("blocking query returned after %v, want its full wait of 1.5s", d)
		}
	})
}

// TestAPITLS serves the API over HTTPS with a self-signed certificate.
func TestAPITLS(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	a := startAgent(t, "n0", func(c *Config) {
		c.HTTP.TLSCertFile, c.HTTP.TLSKeyFile = certFile, keyFile
	})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + a.HTTPAddr() + "/v1/agent/self")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("HTTPS: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	// Plain HTTP to the TLS port gets Go's 400, never the API.
	if code, _ := do(t, a, "GET", "/v1/agent/self", nil); code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the HTTPS API: %d, want 400", code)
	}
	// An unverified client is refused the handshake.
	if _, err := http.Get("https://" + a.HTTPAddr() + "/v1/agent/self"); err == nil {
		t.Error("a client without the CA trusted the self-signed certificate")
	}

	t.Run("bad files fail Start", func(t *testing.T) {
		cfg := TestConfig("n1")
		cfg.HTTP.TLSCertFile, cfg.HTTP.TLSKeyFile = keyFile, certFile
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Shutdown()
		if err := b.Start(); err == nil || !strings.Contains(err.Error(), "tls") {
			t.Errorf("Start with swapped certificate and key: %v", err)
		}
	})
}

// selfSignedCert writes a self-signed certificate for 127.0.0.1 and its key
// to a temporary directory.
func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestHTTPConfigValidate checks the API settings' validation.
func TestHTTPConfigValidate(t *testing.T) {
	good := DefaultHTTPConfig()
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	bad := HTTPConfig{
		Token: "has space", AllowedHosts: []string{"", "a:80", "ok.example"}, MaxConnsPerClient: 0,
		ReadHeaderTimeout: 0, ReadTimeout: -1, MaxHeaderBytes: 10, TLSCertFile: "cert.pem",
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad settings accepted")
	}
	for _, want := range []string{"http-token", `http-allowed-hosts ""`, `http-allowed-hosts "a:80"`,
		"max-conns", "read header timeout", "read timeout", "header bytes", "tls-cert and http-tls-key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "ok.example") {
		t.Errorf("a valid allowed host reported: %v", err)
	}
	reads := DefaultHTTPConfig()
	reads.TokenReads = true
	if err := reads.Validate(); err == nil || !strings.Contains(err.Error(), "needs an http-token") {
		t.Errorf("token-reads without a token: %v", err)
	}
}

// TestConfigFileHTTPKeys checks the API keys of the configuration file.
func TestConfigFileHTTPKeys(t *testing.T) {
	path := writeConfigFile(t, "c.hcl", `
http_token = "tok"
http_token_reads = true
http_allowed_hosts = ["shoal.internal"]
http_max_conns_per_client = 10
http_tls_cert = "/etc/shoal/cert.pem"
http_tls_key = "/etc/shoal/key.pem"
`)
	fc, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := fc.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	h := cfg.HTTP
	if h.Token != "tok" || !h.TokenReads || len(h.AllowedHosts) != 1 || h.AllowedHosts[0] != "shoal.internal" ||
		h.MaxConnsPerClient != 10 || h.TLSCertFile != "/etc/shoal/cert.pem" || h.TLSKeyFile != "/etc/shoal/key.pem" {
		t.Errorf("HTTP config from file = %+v", h)
	}
	if h.ReadTimeout != DefaultHTTPConfig().ReadTimeout {
		t.Errorf("unset key changed: read timeout %v", h.ReadTimeout)
	}
}

// TestPerIPListener checks the connection cap without an agent: per IP,
// released once per connection however often it is closed.
func TestPerIPListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newPerIPListener(raw, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	s1, s2 := <-accepted, <-accepted
	over := dial() // over the cap: closed by the listener, never handed out
	over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection over the cap not closed: %v", err)
	}
	s1.Close()
	s1.Close() // a second Close must not free a second slot
	testutil.Wait(t, 5*time.Second, "one slot free", func() bool { return ln.open("127.0.0.1") == 1 })
	dial()
	<-accepted
	if n := ln.open("127.0.0.1"); n != 2 {
		t.Errorf("open = %d, want 2", n)
	}
	select {
	case c := <-accepted:
		t.Errorf("connection %v over the cap handed out", c.RemoteAddr())
	case <-time.After(100 * time.Millisecond):
	}
	s2.Close()
}
