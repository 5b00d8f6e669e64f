package node

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	consul "github.com/hashicorp/consul/api"
)

// TestUnservedEndpoints checks that what Shoal does not serve answers 501
// with the feature named, that unknown /v1/ paths answer a one-line 404,
// and that a wrong method on a served path is still 405.
func TestUnservedEndpoints(t *testing.T) {
	a := startAgent(t, "n0", nil)
	cases := []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "/v1/kv/a", 501, "Shoal has no KV store (/v1/kv)"},
		{"PUT", "/v1/kv/a/b", 501, "no KV store"},
		{"GET", "/v1/kv", 501, "no KV store"},
		{"PUT", "/v1/txn", 501, "no transactions"},
		{"PUT", "/v1/session/create", 501, "no sessions"},
		{"PUT", "/v1/event/fire/deploy", 501, "no user events"},
		{"GET", "/v1/snapshot", 501, "snapshot"},
		{"GET", "/v1/acl/tokens", 501, "no ACL"},
		{"GET", "/v1/operator/raft/configuration", 501, "no Raft"},
		{"PUT", "/v1/catalog/register", 501, "no catalog writes"},
		{"GET", "/v1/nope", 404, "no such endpoint /v1/nope"},
		{"GET", "/v1/agent/nope", 404, "no such endpoint"},
		{"PUT", "/v1/agent/services", 405, "not allowed"},
		{"GET", "/v1/agent/service/register", 405, "not allowed"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			code, body := do(t, a, c.method, c.path, nil)
			if code != c.code || !strings.Contains(string(body), c.want) {
				t.Errorf("%d %q, want %d containing %q", code, body, c.code, c.want)
			}
			if lines := strings.Count(string(body), "\n"); lines != 1 {
				t.Errorf("body %q has %d lines, want one", body, lines)
			}
		})
	}

	// What a Consul user types first: the error names the feature instead
	// of claiming the key does not exist.
	c := consulClient(t, a)
	_, _, err := c.KV().Get("a", nil)
	if err == nil || !strings.Contains(err.Error(), "501") || !strings.Contains(err.Error(), "KV store") {
		t.Errorf("KV().Get: %v, want a 501 naming the KV store", err)
	}
	if _, _, err := c.Session().Create(&consul.SessionEntry{}, nil); err == nil || !strings.Contains(err.Error(), "501") {
		t.Errorf("Session().Create: %v, want 501", err)
	}
}

// TestDatacenterParam checks ?dc=: this agent's datacenter is served,
// another one answers Consul's 500 "No path to datacenter" on every
// endpoint, and /v1/catalog/datacenters lists this one alone.
func TestDatacenterParam(t *testing.T) {
	a := startAgent(t, "n0", nil)
	c := consulClient(t, a)
	dcs, err := c.Catalog().Datacenters()
	if err != nil || !slices.Equal(dcs, []string{"dc1"}) {
		t.Fatalf("Datacenters() = %v, %v, want [dc1]", dcs, err)
	}
	if _, _, err := c.Catalog().Services(&consul.QueryOptions{Datacenter: "dc1"}); err != nil {
		t.Errorf("Services(dc=dc1): %v", err)
	}
	_, _, err = c.Catalog().Services(&consul.QueryOptions{Datacenter: "dc2"})
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "No path to datacenter") {
		t.Errorf("Services(dc=dc2): %v, want 500 No path to datacenter", err)
	}
	for _, p := range []string{"/v1/catalog/nodes", "/v1/health/service/web", "/v1/agent/members", "/v1/agent/services", "/v1/kv/a"} {
		code, body := do(t, a, "GET", p+"?dc=dc2", nil)
		if code != http.StatusInternalServerError || string(body) != "No path to datacenter\n" {
			t.Errorf("%s?dc=dc2: %d %q, want 500 No path to datacenter", p, code, body)
		}
	}
}

// TestRefusedParams checks that parameters Consul documents and Shoal
// cannot honour are refused with a reason, not ignored, while the ones
// every client sends keep working.
func TestRefusedParams(t *testing.T) {
	a := startAgent(t, "n0", nil)
	cases := []struct {
		query string
		code  int
		want  string
	}{
		{"/v1/agent/members?wan", 400, "no WAN pool"},
		{"/v1/agent/members?wan=1", 400, "no WAN pool"},
		{"/v1/agent/members?segment=alpha", 400, "no network segments"},
		{"/v1/agent/members?segment=", 200, ""},
		{"/v1/catalog/services?ns=team", 400, "no namespaces"},
		{"/v1/catalog/services?ns=default", 200, ""},
		{"/v1/catalog/services?partition=p1", 400, "no admin partitions"},
		{"/v1/health/service/web?peer=other", 400, "no cluster peering"},
		{"/v1/health/service/web?merge-central-config", 400, "central service configuration"},
		{"/v1/catalog/services?stale&consistent=&cached&pretty&token=x&index=0&wait=1s", 200, ""},
		{"/v1/catalog/services?unknown-to-consul=1", 200, ""},
	}
	for _, c := range cases {
		code, body := do(t, a, "GET", c.query, nil)
		if code != c.code || !strings.Contains(string(body), c.want) {
			t.Errorf("GET %s: %d %q, want %d containing %q", c.query, code, body, c.code, c.want)
		}
	}
}

// TestRegisterRefusesUnknownFields checks that a registration field Shoal
// would drop is refused, and an empty one passes.
func TestRegisterRefusesUnknownFields(t *testing.T) {
	a := startAgent(t, "n0", nil)
	cases := []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"connect", "/v1/agent/service/register", `{"Name":"web","Port":80,"Connect":{"Native":true}}`, 400, "field Connect.Native is not supported"},
		{"proxy", "/v1/agent/service/register", `{"Name":"web","Port":80,"Proxy":{"DestinationServiceName":"db"}}`, 400, "field Proxy"},
		{"tagged addresses", "/v1/agent/service/register", `{"Name":"web","Port":80,"TaggedAddresses":{"lan":{"Address":"1.2.3.4","Port":80}}}`, 400, "field TaggedAddresses"},
		{"snake case", "/v1/agent/service/register", `{"Name":"web","Port":80,"enable_tag_override":true}`, 400, "field enable_tag_override"},
		{"check field", "/v1/agent/service/register", `{"Name":"web","Port":80,"Check":{"TCP":"127.0.0.1:80","Interval":"1s","TLSServerName":"x"}}`, 400, "field Check.TLSServerName"},
		{"checks field", "/v1/agent/service/register", `{"Name":"web","Port":80,"Checks":[{"TTL":"10s","AliasService":"db"}]}`, 400, "field Checks[0].AliasService"},
		{"kind", "/v1/agent/service/register", `{"Name":"web","Port":80,"Kind":"connect-proxy"}`, 400, "kind"},
		{"empty unknowns pass", "/v1/agent/service/register", `{"Name":"web","Port":80,"Connect":null,"Proxy":{},"TaggedAddresses":{},"SocketPath":"","Namespace":""}`, 200, ""},
		{"case-insensitive known", "/v1/agent/service/register", `{"name":"api","port":81}`, 200, ""},
		{"check register", "/v1/agent/check/register", `{"Name":"c","TTL":"10s","OSService":"sshd"}`, 400, "field OSService"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, a, "PUT", c.path, c.body)
			if code != c.code || !strings.Contains(string(body), c.want) {
				t.Errorf("%d %q, want %d containing %q", code, body, c.code, c.want)
			}
		})
	}

	// The Consul client sends only what is set: a plain registration passes.
	err := consulClient(t, a).Agent().ServiceRegister(&consul.AgentServiceRegistration{
		Name: "db", Port: 5432, Check: &consul.AgentServiceCheck{TTL: "10s"},
	})
	if err != nil {
		t.Errorf("ServiceRegister(db): %v", err)
	}
	err = consulClient(t, a).Agent().ServiceRegister(&consul.AgentServiceRegistration{
		Name: "mesh", Port: 1, Connect: &consul.AgentServiceConnect{Native: true},
	})
	if err == nil || !strings.Contains(err.Error(), "Connect") {
		t.Errorf("ServiceRegister(Connect): %v, want a 400 naming Connect", err)
	}
}

// TestMembersAndSelfShapes checks the fields Consul's tools read: the
// member tags consul members prints as Type, Build, Protocol and DC, and
// /v1/agent/self's Stats as sections of strings, as consul info prints.
func TestMembersAndSelfShapes(t *testing.T) {
	as := startAgents(t, 2)
	c := consulClient(t, as[0])
	ms, err := c.Agent().Members(false)
	if err != nil || len(ms) != 2 {
		t.Fatalf("Members = %v, %v", ms, err)
	}
	for _, m := range ms {
		want := map[string]string{"role": "node", "dc": "dc1", "build": Version, "vsn": "1", "vsn_min": "1", "vsn_max": "1"}
		for k, v := range want {
			if m.Tags[k] != v {
				t.Errorf("%s: tag %s = %q, want %q", m.Name, k, m.Tags[k], v)
			}
		}
	}

	self, err := c.Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	code, body := do(t, as[0], "GET", "/v1/agent/self", nil)
	if code != http.StatusOK {
		t.Fatalf("self: %d %s", code, body)
	}
	// Decoding into strings fails if any statistic is a number.
	var strict struct {
		Stats map[string]map[string]string
	}
	mustUnmarshal(t, body, &strict)
	for _, section := range []string{"agent", "build", "runtime", "serf_lan", "catalog"} {
		if len(strict.Stats[section]) == 0 {
			t.Errorf("Stats has no %s section: %v", section, strict.Stats)
		}
	}
	if got := strict.Stats["serf_lan"]["members"]; got != "2" {
		t.Errorf("serf_lan.members = %q, want 2", got)
	}
	if got := strict.Stats["build"]["version"]; got != Version {
		t.Errorf("build.version = %q, want %s", got, Version)
	}
	if self["Config"]["Datacenter"] != "dc1" {
		t.Errorf("Config.Datacenter = %v", self["Config"]["Datacenter"])
	}
}
