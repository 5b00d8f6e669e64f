package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/browsertest"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// startCLI runs "shoal args..." in the background until the test cancels
// it; the returned channel gets Run's error.
func startCLI(t *testing.T, args ...string) (stdout, stderr *testutil.LogBuffer, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	stdout, stderr = &testutil.LogBuffer{}, &testutil.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	errc := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		errc <- app.RunContext(ctx, append([]string{"shoal"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(30 * time.Second):
			t.Error("command did not stop within 30s of its cancel")
		}
	})
	return stdout, stderr, cancel, errc
}

func TestDemo(t *testing.T) {
	start := time.Now()
	out, stderr, cancel, done := startCLI(t, "demo", "--http-port", "0", "--proxy-port", "0", "--dns-port", "0")
	testutil.WaitState(t, 60*time.Second, 50*time.Millisecond, "the demo's instructions", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("demo ended early: %v\n%s%s", err, out, stderr)
		default:
		}
		return strings.Contains(out.String(), "/ui/"), out.String()
	})
	guide := out.String()
	t.Logf("demo ready after %v", time.Since(start).Round(time.Millisecond))
	for _, want := range []string{
		"3 agents and 3 instances", "curl -s -H 'Host: hello' http://", "curl -s -X POST http://", "/fail", "/recover",
		"shoal members --http-addr 127.0.0.1:", "shoal services --http-addr 127.0.0.1:", " hello",
		"shoal watch service --http-addr 127.0.0.1:", "shoal rtt --http-addr", "dig @127.0.0.1 -p", "hello.service.shoal SRV",
		"n1", "n2", "n3", "hello-1", "hello-2", "hello-3",
	} {
		if !strings.Contains(guide, want) {
			t.Errorf("instructions lack %q:\n%s", want, guide)
		}
	}
	proxy := regexp.MustCompile(`-H 'Host: hello' http://([0-9.:]+)/`).FindStringSubmatch(guide)
	fail := regexp.MustCompile(`curl -s -X POST (http://[0-9.:]+/fail)`).FindStringSubmatch(guide)
	api := regexp.MustCompile(`(http://[0-9.:]+)/ui/`).FindStringSubmatch(guide)
	if proxy == nil || fail == nil || api == nil {
		t.Fatalf("cannot find the proxy, the /fail URL or the page in:\n%s", guide)
	}

	// Round-robin through the first agent's proxy: every instance answers,
	// in turn.
	counts := helloCounts(t, proxy[1], 30)
	if len(counts) != 3 {
		t.Fatalf("30 requests reached %v, want the 3 instances", counts)
	}
	for inst, n := range counts {
		if n < 5 {
			t.Errorf("%s got %d of 30 requests: %v", inst, n, counts)
		}
	}

	// Failing hello-2's health check takes it out of the pool.
	resp, err := http.Post(fail[1], "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "hello-2 now fails") {
		t.Fatalf("POST /fail: %s", body)
	}
	failed := time.Now()
	testutil.WaitState(t, 10*time.Second, 50*time.Millisecond, "hello-2 out of the proxy's pool", func() (bool, string) {
		c := helloCounts(t, proxy[1], 12)
		return c["hello-2"] == 0 && len(c) == 2, formatCounts(c)
	})
	t.Logf("hello-2 out of the pool %v after POST /fail", time.Since(failed).Round(time.Millisecond))

	// The page is there, and the CLI sees the same.
	if resp, err := http.Get(api[1] + "/ui/"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status page: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	services, _, err := runCLI(t, "services", "--http-addr", strings.TrimPrefix(api[1], "http://"), "hello")
	if err != nil || !regexp.MustCompile(`hello-2\s+n2\s+\S+\s+critical`).MatchString(services) {
		t.Errorf("shoal services hello: %v\n%s", err, services)
	}

	stopping := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop within 30s")
	}
	t.Logf("demo stopped %v after the cancel", time.Since(stopping).Round(time.Millisecond))
	if !strings.HasSuffix(out.String(), "Demo stopped.\n") {
		t.Errorf("output ends with %q", tail(out.String(), 120))
	}
	if s := stderr.String(); s != "" {
		t.Errorf("stderr: %s", s)
	}
	// Everything the demo listened on is closed.
	if conn, err := net.DialTimeout("tcp", proxy[1], time.Second); err == nil {
		conn.Close()
		t.Errorf("proxy %s still accepts connections", proxy[1])
	}
}

// TestDemoStatusPage opens the demo's status page in headless Chromium
// while an instance fails, and shows its check's output. With
// SHOAL_UPDATE_SCREENSHOT=1 it runs the demo on its default ports and saves
// the screenshot as docs/status-page.png, the README's picture.
func TestDemoStatusPage(t *testing.T) {
	if _, _, err := browsertest.Paths(); err != nil {
		t.Skip(err)
	}
	update := os.Getenv("SHOAL_UPDATE_SCREENSHOT") != ""
	args := []string{"demo", "--http-port", "0", "--proxy-port", "0", "--dns-port", "0"}
	if update {
		args = []string{"demo"}
	}
	out, stderr, _, done := startCLI(t, args...)
	testutil.WaitState(t, 60*time.Second, 50*time.Millisecond, "the demo's instructions", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("demo ended early: %v\n%s%s", err, out, stderr)
		default:
		}
		return strings.Contains(out.String(), "/ui/"), out.String()
	})
	guide := out.String()
	fail := regexp.MustCompile(`curl -s -X POST (http://[0-9.:]+/fail)`).FindStringSubmatch(guide)
	page := regexp.MustCompile(`http://[0-9.:]+/ui/`).FindString(guide)
	if fail == nil || page == "" {
		t.Fatalf("cannot find the /fail URL or the page in:\n%s", guide)
	}

	b := browsertest.New(t, 1280, 1000)
	b.Open(page)
	b.WaitText(15*time.Second, "3 members and 3 passing instances", func(s string) bool {
		return strings.Contains(s, "3 / 3") && strings.Contains(s, "3 passing") && strings.Count(s, "alive") == 3
	})
	resp, err := http.Post(fail[1], "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	b.WaitText(15*time.Second, "hello-2 critical", func(s string) bool {
		return strings.Contains(s, "2 passing") && strings.Contains(s, "1 critical")
	})
	b.Click(`tr[data-instance="hello-2"] button.check.s-critical`)
	b.WaitText(5*time.Second, "the failing check's output", func(s string) bool {
		return strings.Contains(s, "hello-2 is failing on purpose")
	})
	if update {
		path := filepath.Join("..", "..", "docs", "status-page.png")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		b.SaveScreenshot(path)
		t.Logf("saved %s", path)
	}
}

func TestDemoFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--agents", "0"}, "--agents 0: want 1-9"},
		{[]string{"--instances", "51"}, "--instances 51: want 1-50"},
		{[]string{"--http-port", "65535"}, "--http-port 65535"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"extra"}, "no arguments"},
	} {
		_, _, err := runCLI(t, append([]string{"demo"}, tt.args...)...)
		wantErr(t, err, tt.want)
	}
}

func TestDemoPickAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	d := &demoCluster{}
	if got := d.pickAddr(taken, 0, false, "n1's HTTP API"); got != "127.0.0.1:0" {
		t.Errorf("pickAddr of a taken port = %s, want a free port", got)
	}
	if len(d.notes) != 1 || !strings.Contains(d.notes[0], "is in use, so n1's HTTP API is on a free port") {
		t.Errorf("notes = %q", d.notes)
	}
	if got := d.pickAddr(0, 2, true, "x"); got != "127.0.0.1:0" || len(d.notes) != 1 {
		t.Errorf("pickAddr(0) = %s, notes %q", got, d.notes)
	}
}

func TestDemoBackend(t *testing.T) {
	b, err := startDemoBackend("hello-9", "n7", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.shutdown(context.Background())
	get := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, b.url(path), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("GET", "/"); code != 200 || body != "hello from hello-9 on n7\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
	steps := []struct {
		method, path string
		health       int
	}{
		{"GET", "/health", 200},
		{"POST", "/fail", 503},
		{"POST", "/recover", 200},
		{"GET", "/toggle", 503},
		{"POST", "/toggle", 200},
	}
	for _, s := range steps {
		if s.path != "/health" {
			get(s.method, s.path)
		}
		if code, body := get("GET", "/health"); code != s.health {
			t.Errorf("after %s %s: /health = %d %q, want %d", s.method, s.path, code, body, s.health)
		}
	}
	if code, _ := get("GET", "/fail"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /fail = %d, want 405", code)
	}
}

// helloCounts sends n requests for the hello service through a proxy and
// counts the answers by instance.
func helloCounts(t *testing.T, proxy string, n int) map[string]int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	counts := map[string]int{}
	for range n {
		req, _ := http.NewRequest("GET", "http://"+proxy+"/", nil)
		req.Host = "hello"
		resp, err := client.Do(req)
		if err != nil {
			counts["error: "+err.Error()]++
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// "hello from hello-2 on n2"
		f := strings.Fields(string(body))
		if resp.StatusCode != http.StatusOK || len(f) != 5 {
			counts[resp.Status+" "+string(body)]++
			continue
		}
		counts[f[2]]++
	}
	return counts
}

func formatCounts(c map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(c) {
		parts = append(parts, k+"="+strconv.Itoa(c[k]))
	}
	return strings.Join(parts, " ")
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
