package node

import (
	"bytes"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/browsertest"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestStatusPageInChromium loads the status page of a three-agent cluster
// in headless Chromium and checks what a person would see: the members
// alive, the services with their instances' health, a check's output on
// click, and the page following changes without a reload.
func TestStatusPageInChromium(t *testing.T) {
	if _, _, err := browsertest.Paths(); err != nil {
		t.Skip(err)
	}
	// Chromium shares the machine's two cores with the agents: the page,
	// not failure detection, is under test.
	as := startAgentsWith(t, 3, func(_ int, c *Config) { steadyMembership(c) })
	putOK(t, as[0], "/v1/agent/service/register", map[string]any{
		"Name": "web", "ID": "web-1", "Port": 8080, "Tags": []string{"v1"},
	})
	putOK(t, as[1], "/v1/agent/service/register", map[string]any{
		"Name": "web", "ID": "web-2", "Port": 8081, "Tags": []string{"<img src=x onerror=alert(1)>"},
		"Check": map[string]any{"CheckID": "web-2-ttl", "Name": "heartbeat", "TTL": "30s", "Status": "critical"},
	})
	putOK(t, as[1], "/v1/agent/check/fail/web-2-ttl?note=disk+full", nil)
	testutil.Wait(t, 10*time.Second, "both instances on n0", func() bool { return len(healthEntries(t, as[0], "web", "")) == 2 })

	b := browsertest.New(t, 1280, 900)
	b.Open("http://" + as[0].HTTPAddr() + "/ui/")
	text := b.WaitText(15*time.Second, "three members and web", func(s string) bool {
		return strings.Contains(s, "web-2") && strings.Count(s, "alive") == 3
	})
	for _, want := range []string{"n0", "n1", "n2", "this agent", "3 / 3", "MEMBERS ALIVE", "1 passing", "1 critical", "web-1", "heartbeat"} {
		if !strings.Contains(text, want) {
			t.Errorf("page does not show %q:\n%s", want, text)
		}
	}
	var members []string
	b.Eval(`return [...document.querySelectorAll('#members tbody tr')].map(r => r.cells[0].querySelector('strong').innerText + ' ' + r.cells[1].innerText)`, &members)
	if got := strings.Join(members, ","); got != "n0 alive,n1 alive,n2 alive" {
		t.Errorf("members table rows = %q", members)
	}
	var health map[string]string
	b.Eval(`return Object.fromEntries([...document.querySelectorAll('tr.instance')].map(r => [r.dataset.instance, r.cells[3].innerText]))`, &health)
	if health["web-1"] != "passing" || health["web-2"] != "critical" {
		t.Errorf("instance health on the page = %v", health)
	}
	// A tag is text, never markup.
	var imgs int
	b.Eval(`return document.querySelectorAll('img').length`, &imgs)
	if imgs != 0 || !strings.Contains(text, "<img src=x onerror=alert(1)>") {
		t.Errorf("a tag with markup became %d elements; page text:\n%s", imgs, text)
	}

	// Clicking a check shows its output.
	b.Click(`tr[data-instance="web-2"] button.check.s-critical`)
	b.WaitText(5*time.Second, "the check's output", func(s string) bool { return strings.Contains(s, "disk full") })

	// Live: changes appear without a reload.
	b.Eval(`window.__sameDocument = true; return null`, nil)
	putOK(t, as[2], "/v1/agent/service/register", map[string]any{"Name": "api", "ID": "api-1", "Port": 9090})
	putOK(t, as[1], "/v1/agent/check/pass/web-2-ttl?note=recovered", nil)
	b.WaitText(15*time.Second, "the new service and web-2 passing", func(s string) bool {
		return strings.Contains(s, "api-1") && strings.Contains(s, "2 passing") && strings.Contains(s, "recovered")
	})
	var same bool
	b.Eval(`return window.__sameDocument === true`, &same)
	if !same {
		t.Error("the page reloaded to show the change")
	}

	shot := b.Screenshot()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() < 1000 || r.Dy() < 600 {
		t.Errorf("screenshot is %v", r)
	}
	path := filepath.Join(t.TempDir(), "status-page.png")
	if dir := os.Getenv("SHOAL_SCREENSHOT_DIR"); dir != "" {
		path = filepath.Join(dir, "status-page-test.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// TestStatusPageDeniedInChromium checks the message a person gets when the
// agent refuses the page's reads (a token required, or no longer the
// right one).
func TestStatusPageDeniedInChromium(t *testing.T) {
	if _, _, err := browsertest.Paths(); err != nil {
		t.Skip(err)
	}
	// The page's files, and an API that refuses every read as the guard
	// does without a token.
	mux := http.NewServeMux()
	p := newStatusPage()
	mux.HandleFunc("GET /ui/{$}", p.serveIndex)
	mux.HandleFunc("GET /ui/{file}", p.serveFile)
	mux.HandleFunc("GET /v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "Permission denied: this agent requires a token")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// Started before the browser, so that the browser (and its blocking
	// query) is gone when the agent shuts down.
	a := startAgent(t, "n0", func(c *Config) { c.HTTP.Token, c.HTTP.TokenReads = "s3cret", true })

	b := browsertest.New(t, 1280, 900)
	b.Open("http://" + ln.Addr().String() + "/ui/")
	text := b.WaitText(10*time.Second, "the access message", func(s string) bool {
		return strings.Contains(s, "requires an API token")
	})
	for _, want := range []string{"--http-token-reads", "/ui/?token=YOUR_TOKEN", "Permission denied", "access denied"} {
		if !strings.Contains(text, want) {
			t.Errorf("page does not show %q:\n%s", want, text)
		}
	}

	// With the real guard: the token in the page's address reaches the
	// page's files and its reads.
	b.Open("http://" + a.HTTPAddr() + "/ui/")
	if s := b.Text(); !strings.Contains(s, "Permission denied") {
		t.Errorf("without a token the page shows:\n%s", s)
	}
	b.Open("http://" + a.HTTPAddr() + "/ui/?token=s3cret")
	b.WaitText(10*time.Second, "the cluster", func(s string) bool {
		return strings.Contains(s, "1 / 1") && strings.Contains(s, "alive") && strings.Contains(s, "live")
	})
}

// TestStatusPageConfigInChromium: on an agent with the node PKI, the page
// lists the intentions (source → destination, allow or deny, precedence)
// and the config entries (kind, name, writer, ModifyIndex), says they are
// enforced, and follows writes and deletes made on another agent without a
// reload. A description is text, never markup.
func TestStatusPageConfigInChromium(t *testing.T) {
	if _, _, err := browsertest.Paths(); err != nil {
		t.Skip(err)
	}
	p := newTestPKI(t, "mesh.test")
	as := startMesh(t, p, 2)
	putOK(t, as[1], "/v1/connect/intentions/exact?source=web&destination=db",
		map[string]any{"Action": "deny", "Description": "<img src=x onerror=alert(1)>"})
	putOK(t, as[1], "/v1/config", map[string]any{"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
	testutil.Wait(t, 5*time.Second, "both entries on n0", func() bool { return len(as[0].Cluster().Entries("")) == 2 })

	b := browsertest.New(t, 1280, 1100)
	b.Open("http://" + as[0].HTTPAddr() + "/ui/")
	text := b.WaitText(15*time.Second, "the configuration", func(s string) bool {
		return strings.Contains(s, "service-defaults") && strings.Contains(s, "service-intentions")
	})
	for _, want := range []string{"CONFIGURATION", "enforced by this agent", "the default is allow", "protocol http", "0 allow, 1 deny"} {
		if !strings.Contains(text, want) {
			t.Errorf("page does not show %q:\n%s", want, text)
		}
	}
	type row struct{ Source, Destination, Action, Precedence string }
	intentions := func() []row {
		var rows []row
		b.Eval(`return [...document.querySelectorAll('#intentions tbody tr')].map(r => ({
			Source: r.cells[0].innerText, Destination: r.cells[1].innerText,
			Action: r.cells[2].innerText, Precedence: r.cells[3].innerText}))`, &rows)
		return rows
	}
	if got := intentions(); len(got) != 1 || got[0] != (row{"web", "→ db", "deny", "9"}) {
		t.Errorf("intentions table = %+v", got)
	}
	var imgs int
	b.Eval(`return document.querySelectorAll('img').length`, &imgs)
	if imgs != 0 || !strings.Contains(text, "<img src=x onerror=alert(1)>") {
		t.Errorf("a description with markup became %d elements", imgs)
	}
	entry, _ := as[0].Cluster().Entry("service-defaults", "web")
	var entries []string
	b.Eval(`return [...document.querySelectorAll('#entries tbody tr')].map(r =>
		[...r.cells].slice(0, 5).map(c => c.innerText).join('|'))`, &entries)
	if len(entries) != 2 || entries[0] != fmt.Sprintf("service-defaults|web|protocol http|n1|%d", entry.Stamp) ||
		!strings.HasPrefix(entries[1], "service-intentions|db|0 allow, 1 deny|n1|") {
		t.Errorf("entries table = %q", entries)
	}

	// Live: an allow from a wildcard and the defaults' delete, written on
	// n1, show without a reload.
	b.Eval(`window.__sameDocument = true; return null`, nil)
	putOK(t, as[1], "/v1/connect/intentions/exact?source=*&destination=db", map[string]any{"Action": "allow"})
	if code, body := do(t, as[1], "DELETE", "/v1/config/service-defaults/web", nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	b.WaitText(15*time.Second, "the new intention and the delete", func(s string) bool {
		return strings.Contains(s, "1 allow, 1 deny") && !strings.Contains(s, "service-defaults")
	})
	if got := intentions(); len(got) != 2 || got[0] != (row{"web", "→ db", "deny", "9"}) || got[1] != (row{"*", "→ db", "allow", "8"}) {
		t.Errorf("intentions table after the write = %+v", got)
	}
	var same bool
	b.Eval(`return window.__sameDocument === true`, &same)
	if !same {
		t.Error("the page reloaded to show the change")
	}

	// A resolver and a splitter: the compiled chain shows, live.
	putOK(t, as[1], "/v1/config", map[string]any{"Kind": "service-resolver", "Name": "web",
		"Subsets": map[string]any{"v1": map[string]any{"Filter": "Service.Meta.version == v1"}, "v2": map[string]any{"Filter": "Service.Meta.version == v2"}}})
	putOK(t, as[1], "/v1/config", map[string]any{"Kind": "service-splitter", "Name": "web",
		"Splits": []map[string]any{{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}}})
	b.WaitText(15*time.Second, "the compiled chain of web", func(s string) bool {
		return strings.Contains(s, "default → web/v1 90%, web/v2 10%")
	})
	path := filepath.Join(t.TempDir(), "status-page-config.png")
	if dir := os.Getenv("SHOAL_SCREENSHOT_DIR"); dir != "" {
		path = filepath.Join(dir, "status-page-config-test.png")
	}
	b.SaveScreenshot(path)
	t.Logf("screenshot: %s", path)

	// Every intention gone: the page says so instead of an empty table.
	for _, path := range []string{"/v1/config/service-intentions/db", "/v1/config/service-splitter/web", "/v1/config/service-resolver/web"} {
		if code, body := do(t, as[1], "DELETE", path, nil); code != http.StatusOK {
			t.Fatalf("delete %s: %d %s", path, code, body)
		}
	}
	b.WaitText(15*time.Second, "no intentions", func(s string) bool {
		return strings.Contains(s, "No intentions") && strings.Contains(s, "No config entries") && strings.Contains(s, "No routers, splitters or resolvers")
	})
}
