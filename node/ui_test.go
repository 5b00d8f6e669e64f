package node

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func TestStatusPageFiles(t *testing.T) {
	a := startAgent(t, "n0", nil)
	for _, tt := range []struct {
		path, ctype, contains string
	}{
		{"/ui/", "text/html", `<script src="app.js" defer>`},
		{"/ui/app.js", "text/javascript", "/v1/shoal/ui/state"},
		{"/ui/style.css", "text/css", "prefers-color-scheme"},
	} {
		resp, err := http.Get("http://" + a.HTTPAddr() + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		body := uiReadBody(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", tt.path, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tt.path, ct, tt.ctype)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tt.path, csp)
		}
		if !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s: body does not contain %q", tt.path, tt.contains)
		}
	}
	for _, path := range []string{"/ui/index.html", "/ui/nope.js", "/ui/..%2fui.go"} {
		if code, _ := do(t, a, "GET", path, nil); code != http.StatusNotFound && code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}

	// The API's root leads a browser to the page, keeping the query.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/", "/ui"} {
		resp, err := client.Get("http://" + a.HTTPAddr() + path + "?token=x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != "/ui/?token=x" {
			t.Errorf("GET %s: %d Location %q, want 302 /ui/?token=x", path, resp.StatusCode, loc)
		}
	}
}

func TestStatusPageWithTokenReads(t *testing.T) {
	a := startAgent(t, "n0", func(c *Config) {
		c.HTTP.Token, c.HTTP.TokenReads = "s3cret", true
	})
	if code, body := do(t, a, "GET", "/ui/", nil); code != http.StatusForbidden || !strings.Contains(string(body), "requires a token") {
		t.Errorf("GET /ui/ without the token: %d %s, want 403 asking for a token", code, body)
	}
	// With ?token= the page carries it to its own files, which need it too.
	code, body := do(t, a, "GET", "/ui/?token=s3cret", nil)
	if code != http.StatusOK || !strings.Contains(string(body), `src="app.js?token=s3cret"`) ||
		!strings.Contains(string(body), `href="style.css?token=s3cret"`) {
		t.Fatalf("GET /ui/?token=: %d %s", code, body)
	}
	for _, path := range []string{"/ui/app.js?token=s3cret", "/ui/style.css?token=s3cret", "/v1/shoal/ui/state?token=s3cret"} {
		if code, body := do(t, a, "GET", path, nil); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
}

func TestUIState(t *testing.T) {
	as := startAgents(t, 2)
	putOK(t, as[0], "/v1/agent/service/register", map[string]any{
		"Name": "web", "ID": "web-1", "Port": 8080, "Tags": []string{"v1"},
	})
	putOK(t, as[1], "/v1/agent/service/register", map[string]any{
		"Name": "web", "ID": "web-2", "Address": "10.0.0.2", "Port": 8081, "Tags": []string{"v2"},
		"Check": map[string]any{"CheckID": "web-2-ttl", "Name": "heartbeat", "TTL": "30s"},
	})
	var st UIState
	testutil.Wait(t, 10*time.Second, "both instances in n0's state", func() bool {
		st = uiGetState(t, as[0], "")
		return len(st.Services) == 1 && len(st.Services[0].Instances) == 2
	})
	if st.Node != "n0" || st.Datacenter != "dc1" || st.Version != Version {
		t.Errorf("state names %q %q %q", st.Node, st.Datacenter, st.Version)
	}
	if len(st.Members) != 2 || st.Members[0].Name != "n0" || st.Members[0].Status != "alive" ||
		st.Members[1].Instances != 1 || st.Members[0].HTTPAddr != as[0].HTTPAddr() {
		t.Errorf("members = %+v", st.Members)
	}
	web := st.Services[0]
	if web.Name != "web" || strings.Join(web.Tags, ",") != "v1,v2" || web.Passing != 1 || web.Critical != 1 {
		t.Errorf("service = %+v", web)
	}
	w1, w2 := web.Instances[0], web.Instances[1]
	if w1.ID != "web-1" || w1.Node != "n0" || w1.Address != "127.0.0.1" || w1.Status != "passing" || len(w1.Checks) != 1 {
		t.Errorf("web-1 = %+v", w1)
	}
	if w2.ID != "web-2" || w2.Address != "10.0.0.2" || w2.Status != "critical" || len(w2.Checks) != 2 ||
		w2.Checks[0].CheckID != "serfHealth" || w2.Checks[1].Name != "heartbeat" || w2.Checks[1].Type != "ttl" {
		t.Errorf("web-2 = %+v", w2)
	}

	// Blocking queries follow the change: each answer carries a higher
	// index, until one shows web-2 passing.
	idx := uiIndex(t, as[0], "")
	putOK(t, as[1], "/v1/agent/check/pass/web-2-ttl?note=fine", nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		next := uiIndex(t, as[0], "?index="+strconv.FormatUint(idx, 10)+"&wait=5s")
		if next <= idx {
			t.Fatalf("blocking query answered index %d after %d", next, idx)
		}
		idx = next
		if uiGetState(t, as[0], "").Services[0].Passing == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("web-2 never showed passing")
		}
	}
}

func TestWorseStatus(t *testing.T) {
	for _, tt := range []struct{ a, b, want string }{
		{"passing", "passing", "passing"},
		{"passing", "warning", "warning"},
		{"warning", "passing", "warning"},
		{"warning", "critical", "critical"},
		{"passing", "maintenance", "critical"},
		{"critical", "warning", "critical"},
	} {
		if got := worseStatus(tt.a, tt.b); got != tt.want {
			t.Errorf("worseStatus(%s, %s) = %s, want %s", tt.a, tt.b, got, tt.want)
		}
	}
}

func uiGetState(t *testing.T, a *Agent, query string) UIState {
	t.Helper()
	code, body := do(t, a, "GET", "/v1/shoal/ui/state"+query, nil)
	if code != http.StatusOK {
		t.Errorf("ui state: %d %s", code, body)
		return UIState{}
	}
	var st UIState
	mustUnmarshal(t, body, &st)
	return st
}

func uiIndex(t *testing.T, a *Agent, query string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + a.HTTPAddr() + "/v1/shoal/ui/state" + query)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	idx, err := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func uiReadBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
