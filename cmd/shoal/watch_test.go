package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/node"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// startInProcAgents starts n agents in this process with the test profile
// (fast timers, free ports), joined to the first, and waits until the first
// sees them all alive.
func startInProcAgents(t *testing.T, n int) []*node.Agent {
	t.Helper()
	var as []*node.Agent
	for i := range n {
		cfg := node.TestConfig(fmt.Sprintf("n%d", i+1))
		cfg.DNSAddr = ""
		cfg.Proxy.HTTPAddr = ""
		if i > 0 {
			cfg.Join = []string{as[0].Cluster().LocalMember().GossipAddr()}
		}
		a, err := node.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Shutdown() })
		as = append(as, a)
	}
	testutil.WaitState(t, 15*time.Second, 50*time.Millisecond, "every agent alive", func() (bool, string) {
		alive := 0
		for _, m := range as[0].Cluster().Members() {
			if m.Status.String() == "alive" {
				alive++
			}
		}
		return alive == n, fmt.Sprintf("%d of %d alive", alive, n)
	})
	return as
}

// apiPut sends a PUT with a JSON body to an agent and fails the test unless
// it answers 200.
func apiPut(t *testing.T, a *node.Agent, path string, body any) {
	t.Helper()
	var buf bytes.Buffer
	if body != nil {
		json.NewEncoder(&buf).Encode(body)
	}
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.HTTPAddr()+path, &buf)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %s", path, resp.Status)
	}
}

// waitLine waits until out holds a line containing each of parts, and
// returns that line.
func waitLine(t *testing.T, out *testutil.LogBuffer, parts ...string) string {
	t.Helper()
	var found string
	testutil.WaitState(t, 10*time.Second, 50*time.Millisecond, fmt.Sprintf("a line with %q", parts), func() (bool, string) {
		for _, line := range strings.Split(out.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				found = line
				return true, ""
			}
		}
		return false, out.String()
	})
	return found
}

func TestWatchService(t *testing.T) {
	as := startInProcAgents(t, 2)
	apiPut(t, as[0], "/v1/agent/service/register", map[string]any{"Name": "web", "ID": "web-1", "Port": 8080})
	addr := as[0].HTTPAddr()
	// Each start waits for the watch's first answer: urfave/cli's flag
	// parsing writes package-level flags, so two apps must not parse at
	// the same time.
	out, stderr, cancel, done := startCLI(t, "watch", "service", "--http-addr", addr, "--wait", "2s", "web")
	waitLine(t, stderr, `Watching service "web" at `+addr+"; Ctrl-C stops.")
	jsonOut, jsonErr, cancelJSON, _ := startCLI(t, "watch", "service", "--http-addr", addr, "--format", "json", "--passing", "web")
	defer cancelJSON()
	waitLine(t, jsonErr, `Watching service "web" (passing instances)`)

	waitLine(t, out, "present", "web", "web-1 on n1", "127.0.0.1:8080", "passing")
	apiPut(t, as[1], "/v1/agent/service/register", map[string]any{
		"Name": "web", "ID": "web-2", "Port": 8081, "Tags": []string{"v2"},
		"Check": map[string]any{"CheckID": "web-2-ttl", "Name": "heartbeat", "TTL": "30s", "Status": "passing"},
	})
	line := waitLine(t, out, "added", "web-2 on n2", "passing", "tags=v2")
	if !strings.HasPrefix(line, time.Now().Format("2006-01-02 ")) {
		t.Errorf("line %q does not start with a timestamp", line)
	}
	apiPut(t, as[1], "/v1/agent/check/fail/web-2-ttl?note=disk+full", nil)
	waitLine(t, out, "health", "web-2 on n2", "critical (was passing)", "output: heartbeat: disk full")
	apiPut(t, as[1], "/v1/agent/service/deregister/web-2", nil)
	waitLine(t, out, "removed", "web-2 on n2")

	// --passing: critical is gone. --format json: one object per line.
	testutil.WaitState(t, 10*time.Second, 50*time.Millisecond, "json events", func() (bool, string) {
		return strings.Count(jsonOut.String(), "\n") >= 3, jsonOut.String()
	})
	var events []watchEvent
	for _, l := range strings.Split(strings.TrimSpace(jsonOut.String()), "\n") {
		var e watchEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		events = append(events, e)
	}
	got := []string{}
	for _, e := range events {
		got = append(got, e.Event+" "+e.ID)
	}
	if strings.Join(got[:3], ",") != "present web-1,added web-2,removed web-2" {
		t.Errorf("--passing json events = %q", got)
	}
	if events[0].Time.IsZero() || events[0].Service != "web" || events[0].Node != "n1" || events[0].Health != "passing" {
		t.Errorf("first event = %+v", events[0])
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("watch: %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 {
		t.Errorf("stderr: %s", stderr)
	}
}

func TestWatchServices(t *testing.T) {
	as := startInProcAgents(t, 1)
	out, stderr, _, _ := startCLI(t, "watch", "services", "--http-addr", as[0].HTTPAddr())
	waitLine(t, stderr, "Watching services at ")
	apiPut(t, as[0], "/v1/agent/service/register", map[string]any{
		"Name": "api", "ID": "api-1", "Tags": []string{"v1"},
		"Check": map[string]any{"CheckID": "api-ttl", "TTL": "30s", "Status": "passing"},
	})
	waitLine(t, out, "added", "api", "1 instance: 1 passing", "tags=v1")
	apiPut(t, as[0], "/v1/agent/check/fail/api-ttl", nil)
	waitLine(t, out, "health", "api", "1 instance: 1 critical (was 1 instance: 1 passing)")
	apiPut(t, as[0], "/v1/agent/service/deregister/api-1", nil)
	waitLine(t, out, "removed", "api")
}

// TestWatchRetries checks that a watch survives an agent error and reports
// what changed meanwhile.
func TestWatchRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Consul-Index", "7")
		switch calls.Add(1) {
		case 1:
			fmt.Fprint(w, `[]`)
		case 2:
			http.Error(w, "catalog unavailable", http.StatusInternalServerError)
		default:
			if r.URL.Query().Get("index") == "7" {
				<-r.Context().Done() // nothing new: block like the agent
				return
			}
			fmt.Fprint(w, `[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"web-1","Service":"web","Port":80},"Checks":[]}]`)
		}
	}))
	defer srv.Close()
	out, stderr, cancel, done := startCLI(t, "watch", "service", "--http-addr", srv.Listener.Addr().String(), "web")
	waitLine(t, out, "added", "web-1 on n1", "10.0.0.1:80")
	if s := stderr.String(); !strings.Contains(s, "catalog unavailable; retrying in") {
		t.Errorf("stderr %q, want the retry", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("watch: %v", err)
	}
}

func TestWatchErrors(t *testing.T) {
	dead := deadAddr(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"watch", "service", "--http-addr", dead, "web"}, "cannot reach the Shoal agent"},
		{[]string{"watch", "services", "--http-addr", dead}, "cannot reach the Shoal agent"},
		{[]string{"watch", "service"}, "one service name"},
		{[]string{"watch", "services", "web"}, "no arguments"},
		{[]string{"watch", "service", "--wait", "1h", "web"}, "--wait"},
		{[]string{"watch", "service", "--format", "xml", "web"}, "--format"},
	} {
		_, _, err := runCLI(t, tt.args...)
		wantErr(t, err, tt.want)
	}
	// A refusal is not retried.
	f := newFakeAgent(t, map[string]reply{"GET /v1/health/service/web": {status: 403, body: "Permission denied: token not accepted"}})
	_, _, err := runCLI(t, "watch", "service", "--http-addr", f.addr(), "web")
	wantErr(t, err, "403", "token not accepted")
}

func TestDiffInstances(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	a := watchInstance{ID: "a", Node: "n1", Address: "10.0.0.1:80", Tags: []string{}, Health: "passing"}
	b := watchInstance{ID: "b", Node: "n2", Address: "10.0.0.2:80", Tags: []string{}, Health: "passing"}
	bCrit := b
	bCrit.Health, bCrit.Output = "critical", "http: 503"
	bMoved := b
	bMoved.Address = "10.0.0.3:80"
	m := func(ins ...watchInstance) map[string]watchInstance {
		out := map[string]watchInstance{}
		for _, in := range ins {
			out[in.Node+"/"+in.ID] = in
		}
		return out
	}
	for _, tt := range []struct {
		name      string
		prev, cur map[string]watchInstance
		want      []string
	}{
		{"first state", nil, m(a, b), []string{"present a", "present b"}},
		{"empty first state", nil, m(), nil},
		{"no change", m(a, b), m(a, b), nil},
		{"added", m(a), m(a, b), []string{"added b"}},
		{"removed", m(a, b), m(a), []string{"removed b"}},
		{"health", m(a, b), m(a, bCrit), []string{"health b critical<-passing"}},
		{"moved", m(b), m(bMoved), []string{"changed b"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range diffInstances("web", tt.prev, tt.cur, now) {
				s := e.Event + " " + e.ID
				if e.Event == "health" {
					s += " " + e.Health + "<-" + e.Previous
				}
				got = append(got, s)
				if !e.Time.Equal(now) || e.Service != "web" {
					t.Errorf("event %+v", e)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("events = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWatchEventLine(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	three, two, zero, one := 3, 2, 0, 1
	for _, tt := range []struct {
		e    watchEvent
		want string
	}{
		{watchEvent{Time: now, Event: "health", Service: "web", ID: "web-2", Node: "n2", Address: "10.0.0.2:80",
			Health: "critical", Previous: "passing", Output: "http: 503"},
			"2025-01-02 03:04:05  health   web  web-2 on n2  10.0.0.2:80  critical (was passing)  output: http: 503"},
		{watchEvent{Time: now, Event: "removed", Service: "web", ID: "web-2", Node: "n2", Address: "10.0.0.2:80", Health: "passing"},
			"2025-01-02 03:04:05  removed  web  web-2 on n2  10.0.0.2:80"},
		{watchEvent{Time: now, Event: "health", Service: "web", Instances: &three, Passing: &two, Warning: &zero, Critical: &one,
			Previous: "3 instances: 3 passing"},
			"2025-01-02 03:04:05  health   web  3 instances: 2 passing, 1 critical (was 3 instances: 3 passing)"},
		{watchEvent{Time: now, Event: "removed", Service: "web"}, "2025-01-02 03:04:05  removed  web"},
	} {
		if got := tt.e.line(); got != tt.want {
			t.Errorf("line =\n%q, want\n%q", got, tt.want)
		}
	}
}
