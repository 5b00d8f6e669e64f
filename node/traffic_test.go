package node

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/gossip"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestTrafficEntriesRefused: entries of the traffic kinds that Shoal cannot
// honour, or that would break a chain, get 400 with a reason and change
// nothing.
func TestTrafficEntriesRefused(t *testing.T) {
	a := startAgent(t, "n0", nil)
	for _, tc := range []struct{ body, want string }{
		// Fields of other datacenters, peers and features Shoal lacks.
		{`{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"api","Datacenter":"dc2"}}`, "Redirect.Datacenter is not supported"},
		{`{"Kind":"service-resolver","Name":"web","Failover":{"*":{"Datacenters":["dc2"]}}}`, "Datacenters is not supported"},
		{`{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":1024}}}`, "RingHashConfig is not supported"},
		{`{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"maglev","HashPolicies":[{"Field":"cookie","FieldValue":"s","CookieConfig":{"TTL":"1h"}}]}}`, "CookieConfig is not supported"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"Service":"web","IdleTimeout":"10s"}}]}`, "IdleTimeout is not supported"},
		{`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100,"Namespace":"team"}]}`, "Namespace is not supported"},
		// Invalid values.
		{`{"Kind":"service-resolver","Name":"web","Subsets":{"V1":{"Filter":"Service.Meta.v == 1"}}}`, "DNS label"},
		{`{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Nope == 1"}}}`, "Subsets[v1].Filter"},
		{`{"Kind":"service-resolver","Name":"web","DefaultSubset":"v9"}`, "not one of Subsets"},
		{`{"Kind":"service-resolver","Name":"web","ConnectTimeout":"soon"}`, "duration"},
		{`{"Kind":"service-resolver","Name":"web","RequestTimeout":"-1s"}`, "want 0 to 24h"},
		{`{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"fastest"}}`, "Policy"},
		{`{"Kind":"service-resolver","Name":"web","LoadBalancer":{"Policy":"least_request","LeastRequestConfig":{"ChoiceCount":3}}}`, "ChoiceCount"},
		{`{"Kind":"service-resolver","Name":"web","PrioritizeByLocality":{"Mode":"nearest"}}`, "Mode"},
		{`{"Kind":"service-resolver","Name":"web","Failover":{"*":{"Service":"web"}}}`, "fails over to itself"},
		{`{"Kind":"service-resolver","Name":"web","Redirect":{"ServiceSubset":"v1"}}`, "not one of Subsets"},
		{`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50},{"Weight":40}]}`, "add up to 90.00"},
		{`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":50.001},{"Weight":49.999}]}`, "to 0.01"},
		{`{"Kind":"service-splitter","Name":"web","Splits":[]}`, "Splits"},
		{`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100,"RequestHeaders":{"Set":{"Host":"x"}}}]}`, "Host may not be changed"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"api"}},"Destination":{}}]}`, "must begin with /"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathExact":"/a","PathPrefix":"/b"}},"Destination":{}}]}`, "at most one of"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathRegex":"(("}},"Destination":{}}]}`, "PathRegex"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x"}]}},"Destination":{}}]}`, "exactly one of"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"Methods":["FETCH"]}},"Destination":{}}]}`, "not an HTTP method"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathRegex":"^/a"}},"Destination":{"PrefixRewrite":"/"}}]}`, "needs Match.HTTP.PathPrefix"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOn":["sometimes"]}}]}`, "RetryOn"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RetryOnStatusCodes":[700]}}]}`, "not a status"},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/"}}}]}`, "Destination: missing"},
		// References a chain cannot resolve.
		{`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"ServiceSubset":"v1"},{"Weight":10,"ServiceSubset":"v2"}]}`, `no subset "v1"`},
		{`{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"ServiceSubset":"canary"}}]}`, `no subset "canary"`},
	} {
		code, body := request(t, a, "PUT", "/v1/config", tc.body, nil)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%.90s: %d %q, want 400 naming %q", tc.body, code, body, tc.want)
		}
	}
	if got := a.Cluster().EntriesSnapshot(); len(got) != 0 {
		t.Fatalf("refused writes stored %d entries: %v", len(got), got)
	}

	// In the right order the chain compiles; then the resolver cannot go
	// while the splitter needs its subsets, nor can a loop be made.
	for _, body := range []string{
		`{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2"}}}`,
		`{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"ServiceSubset":"v1"},{"Weight":10,"ServiceSubset":"v2"}]}`,
		`{"Kind":"service-splitter","Name":"api","Splits":[{"Weight":100,"Service":"web"}]}`,
	} {
		if code, out := request(t, a, "PUT", "/v1/config", body, nil); code != http.StatusOK {
			t.Fatalf("%s: %d %s", body, code, out)
		}
	}
	if code, body := request(t, a, "DELETE", "/v1/config/service-resolver/web", "", nil); code != http.StatusBadRequest || !strings.Contains(body, `no subset "v1"`) {
		t.Errorf("deleting the resolver a splitter needs: %d %q, want 400", code, body)
	}
	if code, body := request(t, a, "PUT", "/v1/config", `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":100,"Service":"api"}]}`, nil); code != http.StatusBadRequest || !strings.Contains(body, "loop") {
		t.Errorf("a splitter loop: %d %q, want 400", code, body)
	}
	if code, body := request(t, a, "PUT", "/v1/config", `{"Kind":"service-resolver","Name":"db","Redirect":{"Service":"web"}}`, nil); code != http.StatusOK {
		t.Errorf("a redirect: %d %q", code, body)
	}
	if code, body := request(t, a, "PUT", "/v1/config", `{"Kind":"service-resolver","Name":"web","Redirect":{"Service":"db"}}`, nil); code != http.StatusBadRequest {
		t.Errorf("a redirect loop: %d %q, want 400", code, body)
	}
}

// TestTrafficEntriesWithConsulClient: the official client writes and reads
// the three kinds in its own types, and what it reads is what it wrote.
func TestTrafficEntriesWithConsulClient(t *testing.T) {
	a := startAgent(t, "n0", nil)
	c := consulClient(t, a)
	entries := []consul.ConfigEntry{
		&consul.ServiceResolverConfigEntry{Kind: consul.ServiceResolver, Name: "web", DefaultSubset: "v1",
			Subsets: map[string]consul.ServiceResolverSubset{
				"v1": {Filter: "Service.Meta.version == v1"}, "v2": {Filter: "Service.Meta.version == v2", OnlyPassing: true}},
			Failover:       map[string]consul.ServiceResolverFailover{"*": {Service: "backup"}},
			ConnectTimeout: 3 * time.Second, RequestTimeout: 10 * time.Second,
			LoadBalancer: &consul.LoadBalancer{Policy: "maglev", HashPolicies: []consul.HashPolicy{{Field: "header", FieldValue: "x-user"}}},
		},
		&consul.ServiceSplitterConfigEntry{Kind: consul.ServiceSplitter, Name: "web", Splits: []consul.ServiceSplit{
			{Weight: 90, ServiceSubset: "v1"}, {Weight: 10, ServiceSubset: "v2", ResponseHeaders: &consul.HTTPHeaderModifiers{Set: map[string]string{"x-canary": "1"}}}}},
		&consul.ServiceRouterConfigEntry{Kind: consul.ServiceRouter, Name: "web", Routes: []consul.ServiceRoute{{
			Match: &consul.ServiceRouteMatch{HTTP: &consul.ServiceRouteHTTPMatch{PathPrefix: "/admin",
				Header: []consul.ServiceRouteHTTPMatchHeader{{Name: "x-admin", Present: true}}, Methods: []string{"GET"}}},
			Destination: &consul.ServiceRouteDestination{ServiceSubset: "v2", PrefixRewrite: "/", RequestTimeout: 2 * time.Second,
				NumRetries: 2, RetryOnStatusCodes: []uint32{503}},
		}}},
	}
	for _, e := range entries {
		if ok, _, err := c.ConfigEntries().Set(e, nil); err != nil || !ok {
			t.Fatalf("Set %s: %v %v", e.GetKind(), ok, err)
		}
	}
	got, _, err := c.ConfigEntries().Get(consul.ServiceResolver, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := got.(*consul.ServiceResolverConfigEntry)
	if r.DefaultSubset != "v1" || r.Subsets["v2"].Filter != "Service.Meta.version == v2" || !r.Subsets["v2"].OnlyPassing ||
		r.ConnectTimeout != 3*time.Second || r.Failover["*"].Service != "backup" || r.LoadBalancer.HashPolicies[0].FieldValue != "x-user" {
		t.Errorf("resolver read back: %+v", r)
	}
	got, _, err = c.ConfigEntries().Get(consul.ServiceRouter, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := got.(*consul.ServiceRouterConfigEntry).Routes[0].Destination
	if d.RequestTimeout != 2*time.Second || d.NumRetries != 2 || d.PrefixRewrite != "/" || d.ServiceSubset != "v2" {
		t.Errorf("router read back: %+v", d)
	}
	list, _, err := c.ConfigEntries().List(consul.ServiceSplitter, nil)
	if err != nil || len(list) != 1 || list[0].(*consul.ServiceSplitterConfigEntry).Splits[1].Weight != 10 {
		t.Errorf("splitters listed: %v %v", list, err)
	}
	// The chain as the status page shows it.
	chains := a.traffic.chains()
	if len(chains) != 1 || chains[0].Service != "web" || chains[0].Error != "" || len(chains[0].Lines) != 2 ||
		!strings.Contains(chains[0].Lines[1], "web/v1 90%") || !strings.Contains(chains[0].Lines[0], "path prefix /admin") {
		t.Errorf("compiled chain: %+v", chains)
	}
	if _, err := c.ConfigEntries().Delete(consul.ServiceRouter, "web", nil); err != nil {
		t.Fatal(err)
	}
}

// splitCluster starts three agents and two versions of a service, v1 on
// n1 and v2 on n2, each instance tagged with its version in Meta.
func splitCluster(t *testing.T) []*Agent {
	t.Helper()
	as := startAgents(t, 3)
	for i, version := range []string{"v1", "v2"} {
		_, port := backend(t, version)
		registerDef(t, as[i+1], map[string]any{"Name": "web", "ID": "web-" + version, "Port": port,
			"Meta": map[string]string{"version": version}})
	}
	for _, a := range as {
		testutil.Wait(t, 5*time.Second, "both versions on "+a.NodeName(), visibleOn(t, a, "web", 2))
	}
	return as
}

func putEntry(t *testing.T, a *Agent, body string) {
	t.Helper()
	if code, out := request(t, a, "PUT", "/v1/config", body, nil); code != http.StatusOK {
		t.Fatalf("%.80s: %d %s", body, code, out)
	}
}

// TestSplitThroughTheProxy: a 90/10 split written on one agent holds on
// another agent's proxy; changed to 0/100 it applies everywhere at once.
func TestSplitThroughTheProxy(t *testing.T) {
	as := splitCluster(t)
	putEntry(t, as[1], `{"Kind":"service-resolver","Name":"web","Subsets":{"v1":{"Filter":"Service.Meta.version == v1"},"v2":{"Filter":"Service.Meta.version == v2"}}}`)
	putEntry(t, as[1], `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":90,"ServiceSubset":"v1"},{"Weight":10,"ServiceSubset":"v2"}]}`)
	client := &http.Client{Timeout: 5 * time.Second}
	testutil.Wait(t, 5*time.Second, "the splitter on n0", func() bool {
		_, ok := as[0].Cluster().Entry(kindServiceSplitter, "web")
		return ok
	})
	const n = 2000
	got := map[string]int{}
	for range n {
		code, body, err := proxyGet(client, as[0], "web", "/")
		if err != nil || code != 200 {
			t.Fatalf("request: %d %q %v", code, body, err)
		}
		got[strings.Fields(body)[0]]++
	}
	if share := float64(got["v2"]) / n; share < 0.08 || share > 0.12 {
		t.Errorf("v2 got %v of %d requests, want about 10%%", got, n)
	}

	putEntry(t, as[2], `{"Kind":"service-splitter","Name":"web","Splits":[{"Weight":0,"ServiceSubset":"v1"},{"Weight":100,"ServiceSubset":"v2"}]}`)
	start := time.Now()
	for _, a := range as {
		testutil.Wait(t, 5*time.Second, "0/100 on "+a.NodeName(), func() bool {
			for range 20 {
				if _, body, err := proxyGet(client, a, "web", "/"); err != nil || !strings.HasPrefix(body, "v2") {
					return false
				}
			}
			return true
		})
	}
	t.Logf("0/100 took effect on every agent's proxy %v after the write", time.Since(start).Round(time.Millisecond))
}

// TestZoneTagAndView: --zone is published in the gossip tags, and the
// proxy sees the zone of every instance's node.
func TestZoneTagAndView(t *testing.T) {
	as := startAgentsWith(t, 2, func(i int, c *Config) { c.Zone = fmt.Sprintf("z%d", i) })
	_, port := backend(t, "b")
	registerDef(t, as[1], map[string]any{"Name": "web", "Port": port})
	testutil.Wait(t, 5*time.Second, "web on n0 with its zone", func() bool {
		ins := lbView{cat: as[0].Cluster().Catalog()}.Instances("web")
		return len(ins) == 1 && ins[0].Zone == "z1" && ins[0].Node == "n1"
	})
	var m gossip.Member
	for _, mm := range as[1].Cluster().Members() {
		if mm.Name == "n0" {
			m = mm
		}
	}
	if m.Tags[tagZone] != "z0" {
		t.Errorf("n0's tags as n1 sees them: %v", m.Tags)
	}
	bad := DefaultConfig()
	bad.Zone = "eu west"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "zone") {
		t.Errorf("zone with a space: %v", err)
	}
}

// TestSidecarUpstreamSpeaksHTTP: once service-defaults says web speaks
// HTTP, api's sidecar upstream to web serves HTTP: web's routes apply to
// it, and a denied intention answers 403 naming it, from api's identity,
// instead of closing the connection.
func TestSidecarUpstreamSpeaksHTTP(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	as := startMesh(t, p, 2)
	_, webPort := backend(t, "web")
	_, adminPort := backend(t, "admin")
	registerDef(t, as[1], map[string]any{"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": webPort})
	registerDef(t, as[1], map[string]any{"ID": "admin-1", "Name": "admin", "Address": "127.0.0.1", "Port": adminPort})
	up := testutil.FreePort(t)
	registerDef(t, as[0], map[string]any{"ID": "api-1", "Name": "api", "Port": 1,
		"Connect": map[string]any{"SidecarService": map[string]any{"Proxy": map[string]any{
			"Upstreams": []map[string]any{{"DestinationName": "web", "LocalBindPort": up}}}}}})
	testutil.Wait(t, 5*time.Second, "web and admin on n0, api on n1", func() bool {
		return visibleOn(t, as[0], "web", 1)() && visibleOn(t, as[0], "admin", 1)() && visibleOn(t, as[1], "api", 1)()
	})
	putEntry(t, as[1], `{"Kind":"service-defaults","Name":"web","Protocol":"http"}`)
	putEntry(t, as[1], `{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin/"}},"Destination":{"Service":"admin"}}]}`)
	get := func(path string) (int, string) {
		t.Helper()
		// A new connection each time: the listener decides per connection.
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", up, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, err = io.Copy(b, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b.String()
	}
	testutil.Wait(t, 5*time.Second, "web's router on n0's sidecar upstream", func() bool {
		code, body := get("/admin/x")
		return code == 200 && body == "admin /admin/x"
	})
	if code, body := get("/x"); code != 200 || body != "web /x" {
		t.Errorf("a path no route takes: %d %q", code, body)
	}
	if n := as[1].mesh.forwarded.snapshot()[[2]string{"api", "admin"}]; n == 0 {
		t.Errorf("admin was not reached as api: %v", as[1].mesh.forwarded.snapshot())
	}
	putEntry(t, as[1], `{"Kind":"service-intentions","Name":"web","Sources":[{"Name":"api","Action":"deny"}]}`)
	testutil.Wait(t, 5*time.Second, "403 for api on n0's sidecar upstream", func() bool {
		code, body := get("/x")
		return code == http.StatusForbidden && strings.Contains(body, "api") && strings.Contains(body, "web")
	})
}
