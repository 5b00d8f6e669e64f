package lb

import (
	"bufio"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestRouteMatch runs each match against the same requests over both
// request types, HTTP/1 (fasthttp, header names kept as sent) and h2c
// (net/http).
func TestRouteMatch(t *testing.T) {
	type req struct {
		method, target string
		headers        [][2]string
	}
	get := func(target string, headers ...[2]string) req { return req{"GET", target, headers} }
	for _, tc := range []struct {
		name  string
		match RouteMatch
		yes   []req
		no    []req
	}{
		{"everything", RouteMatch{}, []req{get("/"), get("/x?y=1")}, nil},
		{"path exact", RouteMatch{PathExact: "/admin"},
			[]req{get("/admin"), get("/admin?x=1")}, []req{get("/admin/"), get("/Admin"), get("/")}},
		{"path exact, any case", RouteMatch{PathExact: "/admin", CaseInsensitive: true},
			[]req{get("/ADMIN")}, []req{get("/admins")}},
		{"path prefix", RouteMatch{PathPrefix: "/api/"},
			[]req{get("/api/"), get("/api/v1/x")}, []req{get("/api"), get("/API/x"), get("/apix")}},
		{"path prefix, any case", RouteMatch{PathPrefix: "/api/", CaseInsensitive: true},
			[]req{get("/API/x")}, []req{get("/ap")}},
		{"path regex", RouteMatch{PathRegex: regexp.MustCompile(`^/v[0-9]+/`)},
			[]req{get("/v2/users")}, []req{get("/vx/users"), get("/a/v2/")}},
		{"path as sent, not decoded", RouteMatch{PathPrefix: "/a%20b"},
			[]req{get("/a%20b/c")}, []req{get("/ab")}},
		{"methods", RouteMatch{Methods: []string{"POST", "PUT"}},
			[]req{{"POST", "/", nil}, {"PUT", "/x", nil}}, []req{get("/")}},
		{"header present", RouteMatch{Headers: []HeaderMatch{{Name: "X-Canary", Present: true}}},
			[]req{get("/", [2]string{"X-Canary", "1"}), get("/", [2]string{"x-canary", "yes"})}, []req{get("/")}},
		{"header exact, name in any case", RouteMatch{Headers: []HeaderMatch{{Name: "x-version", Exact: "v2"}}},
			[]req{get("/", [2]string{"X-Version", "v2"}), get("/", [2]string{"x-version", "v2"})},
			[]req{get("/", [2]string{"X-Version", "v22"}), get("/")}},
		{"header prefix and suffix", RouteMatch{Headers: []HeaderMatch{{Name: "User-Agent", Prefix: "curl/"}, {Name: "X-Region", Suffix: "-1"}}},
			[]req{get("/", [2]string{"User-Agent", "curl/8"}, [2]string{"X-Region", "eu-1"})},
			[]req{get("/", [2]string{"User-Agent", "curl/8"}), get("/", [2]string{"User-Agent", "wget"}, [2]string{"X-Region", "eu-1"})}},
		{"header regex", RouteMatch{Headers: []HeaderMatch{{Name: "X-User", Regex: regexp.MustCompile(`^[0-9]+$`)}}},
			[]req{get("/", [2]string{"X-User", "42"})}, []req{get("/", [2]string{"X-User", "bob"})}},
		{"header inverted", RouteMatch{Headers: []HeaderMatch{{Name: "X-Debug", Present: true, Invert: true}}},
			[]req{get("/")}, []req{get("/", [2]string{"X-Debug", "1"})}},
		{"inverted exact, header absent", RouteMatch{Headers: []HeaderMatch{{Name: "X-Env", Exact: "prod", Invert: true}}},
			[]req{get("/"), get("/", [2]string{"X-Env", "dev"})}, []req{get("/", [2]string{"X-Env", "prod"})}},
		{"query present and exact", RouteMatch{Query: []QueryMatch{{Name: "debug", Present: true}, {Name: "v", Exact: "2"}}},
			[]req{get("/?debug&v=2"), get("/x?v=2&debug=0")}, []req{get("/?v=2"), get("/?debug=1&v=3"), get("/")}},
		{"query regex", RouteMatch{Query: []QueryMatch{{Name: "id", Regex: regexp.MustCompile(`^a`)}}},
			[]req{get("/?id=abc")}, []req{get("/?id=b"), get("/?x=a")}},
		{"everything at once", RouteMatch{PathPrefix: "/api", Methods: []string{"GET"},
			Headers: []HeaderMatch{{Name: "X-Canary", Exact: "1"}}, Query: []QueryMatch{{Name: "q", Present: true}}},
			[]req{get("/api/x?q=1", [2]string{"X-Canary", "1"})},
			[]req{get("/api/x?q=1"), get("/api/x", [2]string{"X-Canary", "1"}), {"POST", "/api/x?q=1", [][2]string{{"X-Canary", "1"}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, want := range []bool{true, false} {
				reqs := tc.yes
				if !want {
					reqs = tc.no
				}
				for _, r := range reqs {
					raw := r.method + " " + r.target + " HTTP/1.1\r\nHost: web\r\n"
					for _, h := range r.headers {
						raw += h[0] + ": " + h[1] + "\r\n"
					}
					raw += "\r\n"
					var fr fasthttp.Request
					fr.Header.DisableNormalizing()
					if err := fr.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
						t.Fatal(err)
					}
					sr, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
					if err != nil {
						t.Fatal(err)
					}
					if got := tc.match.holds((*fastRequest)(&fr)); got != want {
						t.Errorf("HTTP/1 %s %s %v: match = %v, want %v", r.method, r.target, r.headers, got, want)
					}
					if got := tc.match.holds(&stdRequest{r: sr}); got != want {
						t.Errorf("h2c %s %s %v: match = %v, want %v", r.method, r.target, r.headers, got, want)
					}
				}
			}
		})
	}
}

// TestChainMatchOrder checks that the first route that holds wins and that
// a request that matches none takes the default.
func TestChainMatchOrder(t *testing.T) {
	tb, err := NewTable(Routing{Chains: map[string]Chain{"web": {Routes: []Route{
		{Match: RouteMatch{PathPrefix: "/api/admin"}, Splits: []Split{split("admin", "", 100)}},
		{Match: RouteMatch{PathPrefix: "/api"}, Splits: []Split{split("api", "", 100)}},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	ch := tb.chainOf("web")
	for path, want := range map[string]string{"/api/admin/x": "admin", "/api/x": "api", "/": "web"} {
		r, _ := http.NewRequest("GET", "http://web"+path, nil)
		if got := ch.match(&stdRequest{r: r}).legs[0].target.Service; got != want {
			t.Errorf("%s went to %s, want %s", path, got, want)
		}
	}
}
