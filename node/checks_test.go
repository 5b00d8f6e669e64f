package node

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/gossip"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func TestDamper(t *testing.T) {
	// Each step is a raw result (P passing, W warning, F critical) and the
	// status the damper reports for it ("-" keeps the current one).
	tests := []struct {
		name                       string
		success, warning, critical int
		steps                      string
		want                       []string
	}{
		{name: "no damping", steps: "PFWP",
			want: []string{"passing", "critical", "warning", "passing"}},
		{name: "3 successes before passing", success: 3, steps: "PPPFPPW",
			want: []string{"-", "-", "passing", "critical", "-", "-", "warning"}},
		{name: "a failure resets the successes", success: 2, steps: "PFPP",
			want: []string{"-", "critical", "-", "passing"}},
		{name: "3 failures before critical", critical: 3, steps: "FFFPFFPF",
			want: []string{"-", "-", "critical", "passing", "-", "-", "passing", "-"}},
		{name: "warning before critical", warning: 2, critical: 4, steps: "FFFFFP",
			want: []string{"-", "warning", "warning", "critical", "critical", "passing"}},
		{name: "warning threshold above critical", warning: 5, critical: 2, steps: "FF",
			want: []string{"-", "critical"}},
		{name: "flapping never settles", success: 3, critical: 3, steps: "PFPFPFPFPF",
			want: []string{"-", "-", "-", "-", "-", "-", "-", "-", "-", "-"}},
	}
	raw := map[byte]string{'P': gossip.StatusPassing, 'W': gossip.StatusWarning, 'F': gossip.StatusCritical}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDamper(&CheckDefinition{SuccessBeforePassing: tt.success,
				FailuresBeforeWarning: tt.warning, FailuresBeforeCritical: tt.critical})
			for i := range len(tt.steps) {
				got := d.observe(raw[tt.steps[i]])
				if got == "" {
					got = "-"
				}
				if got != tt.want[i] {
					t.Errorf("step %d (%s of %q): got %s, want %s", i+1, raw[tt.steps[i]], tt.steps, got, tt.want[i])
				}
			}
		})
	}
}

// checkBackend is the target of HTTP checks. It answers the status in code
// (or what answer says), counts requests and records the most ever in
// flight at once; with block set it holds requests until the client gives up
// or the test ends.
type checkBackend struct {
	srv         *httptest.Server
	url         string
	answer      func(n int64) (int, string)
	code        atomic.Int64
	delay       atomic.Int64 // nanoseconds each request is held
	block       atomic.Bool
	hits        atomic.Int64
	inflight    atomic.Int64
	maxInflight atomic.Int64
	lastOK      atomic.Int64 // 1 if the last answer was 2xx, 0 if not, -1 before any
	flippedAt   atomic.Int64 // Unix ns of the last answer that changed between 2xx and not
	done        chan struct{}
}

// newCheckBackend starts a backend answering 200; answer, if not nil,
// decides each answer from the request's sequence number instead.
func newCheckBackend(t *testing.T, answer func(n int64) (int, string)) *checkBackend {
	t.Helper()
	b := &checkBackend{answer: answer, done: make(chan struct{})}
	b.code.Store(http.StatusOK)
	b.lastOK.Store(-1)
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	b.url = b.srv.URL
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { close(b.done) }) // runs first: releases held requests
	return b
}

func (b *checkBackend) serve(w http.ResponseWriter, r *http.Request) {
	n := b.hits.Add(1)
	cur := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for m := b.maxInflight.Load(); cur > m && !b.maxInflight.CompareAndSwap(m, cur); m = b.maxInflight.Load() {
	}
	if d := time.Duration(b.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-b.done:
		case <-r.Context().Done():
		}
	}
	if b.block.Load() {
		select {
		case <-b.done:
		case <-r.Context().Done():
		}
		return
	}
	code, body := int(b.code.Load()), "hello"
	if b.answer != nil {
		code, body = b.answer(n)
	}
	ok := int64(0)
	if code < 300 {
		ok = 1
	}
	if prev := b.lastOK.Swap(ok); prev != -1 && prev != ok {
		b.flippedAt.Store(time.Now().UnixNano())
	}
	w.WriteHeader(code)
	fmt.Fprint(w, body)
}

// putOK sends a PUT to an agent and fails the test unless it answers 200.
func putOK(t *testing.T, a *Agent, path string, body any) {
	t.Helper()
	if code, out := do(t, a, "PUT", path, body); code != http.StatusOK {
		t.Fatalf("PUT %s: %d %s", path, code, out)
	}
}

// wantCode sends a request and fails the test unless it answers code.
func wantCode(t *testing.T, a *Agent, method, path string, body any, code int) []byte {
	t.Helper()
	got, out := do(t, a, method, path, body)
	if got != code {
		t.Fatalf("%s %s: %d %s, want %d", method, path, got, out, code)
	}
	return out
}

// agentChecksOf reads /v1/agent/checks.
func agentChecksOf(t *testing.T, a *Agent) map[string]AgentCheck {
	t.Helper()
	out := wantCode(t, a, "GET", "/v1/agent/checks", nil, http.StatusOK)
	var m map[string]AgentCheck
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// waitCheckStatus polls /v1/agent/checks until check id has status, and
// returns it.
func waitCheckStatus(t *testing.T, a *Agent, id, status string, timeout time.Duration) AgentCheck {
	t.Helper()
	var c AgentCheck
	var ok bool
	testutil.Wait(t, timeout, fmt.Sprintf("check %s %s on %s", id, status, a.NodeName()), func() bool {
		c, ok = agentChecksOf(t, a)[id]
		return ok && c.Status == status
	})
	return c
}

// holdsFor polls cond for d and fails the test the first time it is false:
// the way to assert that something does not happen within a bounded window.
func holdsFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !cond() {
			t.Fatalf("%s stopped holding", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpService is a registration of one service with one HTTP check.
func httpService(id, name, url string, extra map[string]any) map[string]any {
	check := map[string]any{"CheckID": "chk-" + id, "HTTP": url, "Interval": "100ms", "Timeout": "1s"}
	for k, v := range extra {
		check[k] = v
	}
	return map[string]any{"ID": id, "Name": name, "Check": check}
}

func TestHTTPCheckFollowsBackendStatus(t *testing.T) {
	b := newCheckBackend(t, nil)
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", httpService("web-1", "web", b.url+"/health", nil))

	waitCheckStatus(t, a, "chk-web-1", "passing", 5*time.Second)
	steps := []struct {
		code   int
		status string
		line   string
	}{
		{500, "critical", "500 Internal Server Error"},
		{429, "warning", "429 Too Many Requests"},
		{200, "passing", "200 OK"},
	}
	for _, s := range steps {
		b.code.Store(int64(s.code))
		c := waitCheckStatus(t, a, "chk-web-1", s.status, 5*time.Second)
		if !strings.Contains(c.Output, s.line) || !strings.Contains(c.Output, b.url+"/health") {
			t.Errorf("after %d: output %q, want the URL and %q", s.code, c.Output, s.line)
		}
		if c.ServiceID != "web-1" || c.ServiceName != "web" || c.Type != "http" {
			t.Errorf("after %d: check = %+v, want service web-1 (web), type http", s.code, c)
		}
	}
}

func TestHTTPCheckRedirects(t *testing.T) {
	other := newCheckBackend(t, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.url+"/health", http.StatusFound)
	})
	mux.HandleFunc("/here", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "fine") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", httpService("same", "redir", srv.URL+"/here", map[string]any{"Status": "critical"}))
	putOK(t, a, "/v1/agent/service/register", httpService("away", "redir", srv.URL+"/away", map[string]any{"Status": "passing"}))

	c := waitCheckStatus(t, a, "chk-same", "passing", 5*time.Second)
	if !strings.Contains(c.Output, "fine") {
		t.Errorf("same-host redirect: output %q, want the target's body", c.Output)
	}
	c = waitCheckStatus(t, a, "chk-away", "critical", 5*time.Second)
	if !strings.Contains(c.Output, "another host") {
		t.Errorf("redirect to another host: output %q, want the refusal", c.Output)
	}
	if n := other.hits.Load(); n != 0 {
		t.Errorf("the other host was requested %d times, want 0", n)
	}
}

func TestHTTPCheckTimeout(t *testing.T) {
	b := newCheckBackend(t, nil)
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register",
		httpService("slow-1", "slow", b.url, map[string]any{"Timeout": "200ms"}))
	waitCheckStatus(t, a, "chk-slow-1", "passing", 5*time.Second)

	b.block.Store(true)
	start := time.Now()
	c := waitCheckStatus(t, a, "chk-slow-1", "critical", 5*time.Second)
	t.Logf("critical %v after the backend stopped answering: %s", time.Since(start).Round(time.Millisecond), c.Output)
	if !strings.Contains(c.Output, "Timeout") && !strings.Contains(c.Output, "deadline") {
		t.Errorf("output %q, want a timeout", c.Output)
	}
	b.block.Store(false)
	waitCheckStatus(t, a, "chk-slow-1", "passing", 5*time.Second)
}

func TestTCPCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "db-1", "Name": "db",
		"Check": map[string]any{"CheckID": "tcp-db", "TCP": ln.Addr().String(), "Interval": "100ms", "Timeout": "500ms"}})

	c := waitCheckStatus(t, a, "tcp-db", "passing", 5*time.Second)
	if c.Type != "tcp" || !strings.Contains(c.Output, "Success") {
		t.Errorf("check = %+v, want type tcp with a success output", c)
	}
	ln.Close()
	c = waitCheckStatus(t, a, "tcp-db", "critical", 5*time.Second)
	if !strings.Contains(c.Output, ln.Addr().String()) {
		t.Errorf("output %q, want the address", c.Output)
	}
}

func TestTTLCheck(t *testing.T) {
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "job-1", "Name": "job",
		"Check": map[string]any{"CheckID": "ttl-job", "TTL": "1s"}})
	c := agentChecksOf(t, a)["ttl-job"]
	if c.Status != "critical" || c.Type != "ttl" {
		t.Fatalf("new TTL check = %+v, want critical, type ttl", c)
	}

	putOK(t, a, "/v1/agent/check/pass/ttl-job?note=ok", nil)
	if c := agentChecksOf(t, a)["ttl-job"]; c.Status != "passing" || c.Output != "ok" {
		t.Errorf("after pass: %s %q, want passing \"ok\"", c.Status, c.Output)
	}

	start := time.Now()
	c = waitCheckStatus(t, a, "ttl-job", "critical", 5*time.Second)
	t.Logf("TTL 1s expired after %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(c.Output, "TTL expired") {
		t.Errorf("expired: output %q, want \"TTL expired\"", c.Output)
	}

	putOK(t, a, "/v1/agent/check/update/ttl-job", map[string]string{"Status": "warning", "Output": "x"})
	if c := agentChecksOf(t, a)["ttl-job"]; c.Status != "warning" || c.Output != "x" {
		t.Errorf("after update: %s %q, want warning \"x\"", c.Status, c.Output)
	}
	putOK(t, a, "/v1/agent/check/warn/ttl-job?note=slow", nil)
	putOK(t, a, "/v1/agent/check/fail/ttl-job?note=down", nil)
	if c := agentChecksOf(t, a)["ttl-job"]; c.Status != "critical" || c.Output != "down" {
		t.Errorf("after fail: %s %q, want critical \"down\"", c.Status, c.Output)
	}

	wantCode(t, a, "PUT", "/v1/agent/check/update/ttl-job", map[string]string{"Status": "fine"}, http.StatusBadRequest)
	wantCode(t, a, "PUT", "/v1/agent/check/pass/nope", nil, http.StatusNotFound)
	wantCode(t, a, "PUT", "/v1/agent/check/update/nope", map[string]string{"Status": "passing"}, http.StatusNotFound)

	b := newCheckBackend(t, nil)
	putOK(t, a, "/v1/agent/service/register", httpService("web-1", "web", b.url, nil))
	wantCode(t, a, "PUT", "/v1/agent/check/pass/chk-web-1", nil, http.StatusBadRequest)
	wantCode(t, a, "PUT", "/v1/agent/check/update/chk-web-1", map[string]string{"Status": "passing"}, http.StatusBadRequest)
}

func TestStandaloneCheckRegistration(t *testing.T) {
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "api-1", "Name": "api"})
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "api-2", "Name": "api"})
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "db-1", "Name": "db"})
	passing := func(name string) map[string]bool {
		ids := map[string]bool{}
		for _, e := range healthEntries(t, a, name, "?passing") {
			ids[e.Service.ID] = true
		}
		return ids
	}
	if got := passing("api"); !got["api-1"] || !got["api-2"] {
		t.Fatalf("api passing = %v before any check", got)
	}

	// With a ServiceID the check belongs to that service alone.
	putOK(t, a, "/v1/agent/check/register", map[string]any{"Name": "api-1 ttl", "CheckID": "api-1-ttl",
		"ServiceID": "api-1", "TTL": "30s"})
	c := agentChecksOf(t, a)["api-1-ttl"]
	if c.ServiceID != "api-1" || c.ServiceName != "api" || c.Status != "critical" {
		t.Errorf("service check = %+v, want critical of api-1 (api)", c)
	}
	if got := passing("api"); got["api-1"] || !got["api-2"] {
		t.Errorf("api passing = %v, want api-2 only", got)
	}
	putOK(t, a, "/v1/agent/check/pass/api-1-ttl", nil)
	if got := passing("api"); !got["api-1"] || !got["api-2"] {
		t.Errorf("api passing = %v after pass, want both", got)
	}

	// Without one it is the node's, and counts against every service.
	putOK(t, a, "/v1/agent/check/register", map[string]any{"Name": "disk", "TTL": "30s"})
	c = agentChecksOf(t, a)["disk"]
	if c.ServiceID != "" || c.Status != "critical" || c.CheckID != "disk" {
		t.Errorf("node check = %+v, want critical, ID from the name, no service", c)
	}
	if got, db := passing("api"), passing("db"); len(got) != 0 || len(db) != 0 {
		t.Errorf("passing = %v %v under a critical node check, want none", got, db)
	}
	for _, e := range healthEntries(t, a, "db", "") {
		found := false
		for _, hc := range e.Checks {
			found = found || (hc.CheckID == "disk" && hc.Status == "critical")
		}
		if !found {
			t.Errorf("db entry checks = %+v, want the node check disk", e.Checks)
		}
	}
	putOK(t, a, "/v1/agent/check/pass/disk", nil)
	if got, db := passing("api"), passing("db"); len(got) != 2 || len(db) != 1 {
		t.Errorf("passing = %v %v after the node check passed, want all", got, db)
	}

	wantCode(t, a, "PUT", "/v1/agent/check/register", map[string]any{"Name": "x", "ServiceID": "nope", "TTL": "10s"}, http.StatusBadRequest)
	wantCode(t, a, "PUT", "/v1/agent/check/register", map[string]any{"TTL": "10s"}, http.StatusBadRequest)
	wantCode(t, a, "PUT", "/v1/agent/check/deregister/nope", nil, http.StatusNotFound)
	putOK(t, a, "/v1/agent/check/deregister/disk", nil)
	putOK(t, a, "/v1/agent/check/deregister/api-1-ttl", nil)
	if m := agentChecksOf(t, a); len(m) != 0 {
		t.Errorf("checks after deregistering all = %v", m)
	}
}

func TestGRPCCheckRejected(t *testing.T) {
	a := startAgent(t, "n0", nil)
	wantCode(t, a, "PUT", "/v1/agent/service/register", map[string]any{"Name": "g",
		"Check": map[string]any{"GRPC": "127.0.0.1:9000", "Interval": "1s"}}, http.StatusBadRequest)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"Name": "g"})
	out := wantCode(t, a, "PUT", "/v1/agent/check/register", map[string]any{"Name": "g", "ServiceID": "g",
		"GRPC": "127.0.0.1:9000", "Interval": "1s"}, http.StatusBadRequest)
	if !strings.Contains(string(out), "GRPC") {
		t.Errorf("reason %q does not name GRPC", out)
	}
}

func TestDeregisterCheckStopsRunner(t *testing.T) {
	b := newCheckBackend(t, nil)
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "web-1", "Name": "web"})
	putOK(t, a, "/v1/agent/check/register", map[string]any{"Name": "probe", "ServiceID": "web-1",
		"HTTP": b.url, "Interval": "100ms"})
	testutil.Wait(t, 5*time.Second, "3 probes", func() bool { return b.hits.Load() >= 3 })

	putOK(t, a, "/v1/agent/check/deregister/probe", nil)
	after := b.hits.Load()
	// One probe may have been in flight when the check went away.
	holdsFor(t, time.Second, "no more probes", func() bool { return b.hits.Load() <= after+1 })
	if _, ok := agentChecksOf(t, a)["probe"]; ok {
		t.Error("probe still listed after deregistration")
	}
}

func TestChecksSurviveRestart(t *testing.T) {
	b := newCheckBackend(t, nil)
	dir := t.TempDir()
	withDir := func(c *Config) { c.DataDir = dir }
	a := startAgent(t, "n0", withDir)
	putOK(t, a, "/v1/agent/service/register", httpService("web-1", "web", b.url, nil))
	putOK(t, a, "/v1/agent/check/register", map[string]any{"Name": "heartbeat", "ServiceID": "web-1", "TTL": "1s"})
	waitCheckStatus(t, a, "chk-web-1", "passing", 5*time.Second)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	before := b.hits.Load()

	a = startAgent(t, "n0", withDir)
	checks := agentChecksOf(t, a)
	if c := checks["chk-web-1"]; c.Status != "passing" || c.Type != "http" {
		t.Errorf("after restart: chk-web-1 = %+v, want passing http", c)
	}
	if _, ok := checks["heartbeat"]; !ok {
		t.Errorf("after restart: heartbeat missing from %v", checks)
	}
	testutil.Wait(t, 5*time.Second, "the HTTP check probing again", func() bool { return b.hits.Load() > before+2 })
	b.code.Store(http.StatusServiceUnavailable)
	waitCheckStatus(t, a, "chk-web-1", "critical", 5*time.Second)
	// The TTL timer runs again too.
	putOK(t, a, "/v1/agent/check/pass/heartbeat?note=alive", nil)
	waitCheckStatus(t, a, "heartbeat", "passing", time.Second)
	c := waitCheckStatus(t, a, "heartbeat", "critical", 5*time.Second)
	if !strings.Contains(c.Output, "TTL expired") {
		t.Errorf("heartbeat output %q, want TTL expired", c.Output)
	}
}

func TestDeregisterCriticalServiceAfter(t *testing.T) {
	b := newCheckBackend(t, nil)
	b.code.Store(http.StatusInternalServerError)
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "keep", "Name": "keep"})
	start := time.Now()
	putOK(t, a, "/v1/agent/service/register",
		httpService("doomed", "doomed", b.url, map[string]any{"DeregisterCriticalServiceAfter": "500ms"}))

	testutil.Wait(t, 5*time.Second, "doomed deregistered", func() bool {
		_, ok := a.reg.current().Services["doomed"]
		return !ok
	})
	t.Logf("deregistered %v after registration", time.Since(start).Round(time.Millisecond))
	if _, ok := a.reg.current().Services["keep"]; !ok {
		t.Error("the healthy service was deregistered too")
	}
	// Its runner stops with it.
	after := b.hits.Load()
	holdsFor(t, 500*time.Millisecond, "no probes of the deregistered service", func() bool { return b.hits.Load() <= after+1 })
}

func TestDeregisterCriticalServiceAfterTurnedCritical(t *testing.T) {
	b := newCheckBackend(t, nil)
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register",
		httpService("doomed", "doomed", b.url, map[string]any{"DeregisterCriticalServiceAfter": "500ms"}))
	waitCheckStatus(t, a, "chk-doomed", "passing", 5*time.Second)
	b.code.Store(http.StatusInternalServerError)
	start := time.Now()
	testutil.Wait(t, 5*time.Second, "doomed deregistered", func() bool {
		_, ok := a.reg.current().Services["doomed"]
		return !ok
	})
	t.Logf("deregistered %v after the backend failed", time.Since(start).Round(time.Millisecond))
}

func TestChecksNeverOverlap(t *testing.T) {
	b := newCheckBackend(t, nil)
	b.delay.Store(int64(300 * time.Millisecond))
	a := startAgent(t, "n0", nil)
	svc := httpService("slow-1", "slow", b.url, map[string]any{"Timeout": "2s"})
	putOK(t, a, "/v1/agent/service/register", svc)
	testutil.Wait(t, 10*time.Second, "2 probes", func() bool { return b.hits.Load() >= 2 })
	// Registering the same definition again must not start a second runner.
	putOK(t, a, "/v1/agent/service/register", svc)
	putOK(t, a, "/v1/agent/service/register", svc)
	testutil.Wait(t, 10*time.Second, "6 probes", func() bool { return b.hits.Load() >= 6 })
	if m := b.maxInflight.Load(); m != 1 {
		t.Errorf("up to %d probes ran at once, want 1", m)
	}
}

func TestAgentHealthEndpoints(t *testing.T) {
	a := startAgent(t, "n0", nil)
	for _, id := range []string{"web-1", "web-2"} {
		putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": id, "Name": "web",
			"Check": map[string]any{"CheckID": "ttl-" + id, "TTL": "30s"}})
	}
	set := func(id, verb string) { putOK(t, a, "/v1/agent/check/"+verb+"/ttl-"+id, nil) }
	get := func(path string) (int, string) {
		code, body := do(t, a, "GET", path, nil)
		return code, string(body)
	}

	set("web-2", "pass")
	for _, tt := range []struct {
		verb, status string
		code         int
	}{
		{"pass", "passing", http.StatusOK},
		{"warn", "warning", http.StatusTooManyRequests},
		{"fail", "critical", http.StatusServiceUnavailable},
	} {
		set("web-1", tt.verb)
		code, body := get("/v1/agent/health/service/id/web-1")
		var info AgentServiceChecksInfo
		if err := json.Unmarshal([]byte(body), &info); err != nil {
			t.Fatalf("id/web-1: %v in %q", err, body)
		}
		if code != tt.code || info.AggregatedStatus != tt.status || info.Service.ID != "web-1" || len(info.Checks) != 1 {
			t.Errorf("id/web-1 %s: %d %+v, want %d %s", tt.verb, code, info, tt.code, tt.status)
		}
		if code, body := get("/v1/agent/health/service/id/web-1?format=text"); code != tt.code || body != tt.status {
			t.Errorf("id/web-1?format=text %s: %d %q, want %d %q", tt.verb, code, body, tt.code, tt.status)
		}
		// By name the worst instance decides; web-2 is passing.
		code, body = get("/v1/agent/health/service/name/web")
		var infos []AgentServiceChecksInfo
		if err := json.Unmarshal([]byte(body), &infos); err != nil {
			t.Fatalf("name/web: %v in %q", err, body)
		}
		if code != tt.code || len(infos) != 2 {
			t.Errorf("name/web %s: %d with %d instances, want %d with 2", tt.verb, code, len(infos), tt.code)
		}
		if code, body := get("/v1/agent/health/service/name/web?format=text"); code != tt.code || body != tt.status {
			t.Errorf("name/web?format=text %s: %d %q, want %d %q", tt.verb, code, body, tt.code, tt.status)
		}
	}
	if code, _ := get("/v1/agent/health/service/id/nope"); code != http.StatusNotFound {
		t.Errorf("id/nope: %d, want 404", code)
	}
	if code, _ := get("/v1/agent/health/service/name/nope"); code != http.StatusNotFound {
		t.Errorf("name/nope: %d, want 404", code)
	}
}

// TestFirstCheckOutputShown: a check registered critical (the default) that
// stays critical still shows why, at once, not after the output throttle.
func TestFirstCheckOutputShown(t *testing.T) {
	b := newCheckBackend(t, nil)
	b.code.Store(http.StatusInternalServerError)
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/agent/service/register", httpService("web-1", "web", b.url, nil))
	testutil.Wait(t, 5*time.Second, "the first output of chk-web-1", func() bool {
		return strings.Contains(agentChecksOf(t, a)["chk-web-1"].Output, "500 Internal Server Error")
	})
}
