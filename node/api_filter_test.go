package node

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestNewFilter checks parsing and the bounds on expressions.
func TestNewFilter(t *testing.T) {
	cases := []struct {
		expr string
		ok   bool
		want string
	}{
		{`Name == "n1"`, true, ""},
		{`Tags.dc == dc1 and Status == 1`, true, ""},
		{`not (Name == "a" or Name == "b")`, true, ""},
		{`Name == "(((((((((((((((((((((((((((((((((((("`, true, ""}, // parens in a string do not nest
		{`Name ==`, false, "1:8"},
		{`Nope == "x"`, false, "Nope"},
		{strings.Repeat("(", 33) + `Name == "a"` + strings.Repeat(")", 33), false, "nests 33 deep"},
		{strings.Repeat("not ", 33) + `Name == "a"`, false, "nests 33 deep"},
		{strings.Repeat(`Name == "a" or `, 250) + `Name == "a"`, true, ""}, // long but flat
		{`any Tags as k, v { v == "x" }`, true, ""},
		{`Name == "` + strings.Repeat("a", maxFilterLen) + `"`, false, "over the limit of 4096"},
	}
	for _, c := range cases {
		_, err := newFilter(c.expr, AgentMember{})
		if c.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("newFilter(%.40q) = %v, want ok=%v containing %q", c.expr, err, c.ok, c.want)
		}
	}
}

// TestFilterHostile checks that huge, deeply nested and invalid filters get
// a one-line 400 quickly.
func TestFilterHostile(t *testing.T) {
	a := startAgent(t, "n0", nil)
	hostile := map[string]string{
		"1 MiB":          `Name == "` + strings.Repeat("a", 1<<20) + `"`,
		"48 KiB":         `Name == "` + strings.Repeat("a", 48<<10) + `"`,
		"10000 parens":   strings.Repeat("(", 10000) + `Name == "a"` + strings.Repeat(")", 10000),
		"10000 nots":     strings.Repeat("not ", 10000) + `Name == "a"`,
		"invalid":        `Name === "a"`,
		"unbalanced":     `((Name == "a"`,
		"unknown field":  `Bogus == "a"`,
		"newline inside": "Name ==\n\"a\" or",
	}
	for name, expr := range hostile {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			code, body := do(t, a, "GET", "/v1/agent/members?filter="+url.QueryEscape(expr), nil)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %v, want well under 2s", took)
			}
			// A 1 MiB URL is over the agent's header limit: the server
			// refuses it with 431 before the API sees it.
			if name == "1 MiB" && code == http.StatusRequestHeaderFieldsTooLarge {
				return
			}
			if code != http.StatusBadRequest {
				t.Fatalf("%d %.200q, want 400", code, body)
			}
			if strings.Count(string(body), "\n") != 1 {
				t.Errorf("body %q is not one line", body)
			}
		})
	}
	// A long flat expression within the limits parses and answers.
	start := time.Now()
	long := strings.Repeat(`Name == "a" or `, 250) + `Name == "n0"`
	if code, body := do(t, a, "GET", "/v1/agent/members?filter="+url.QueryEscape(long), nil); code != http.StatusOK || !strings.Contains(string(body), `"n0"`) {
		t.Errorf("long flat filter: %d %.200q, want n0", code, body)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("long flat filter took %v", took)
	}
	// The parser itself, without the HTTP header limit in front of it.
	start = time.Now()
	if _, err := newFilter(hostile["1 MiB"], AgentMember{}); err == nil {
		t.Error("1 MiB filter accepted")
	}
	if _, err := newFilter(hostile["10000 parens"], AgentMember{}); err == nil {
		t.Error("10000-deep filter accepted")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("refusing took %v", took)
	}
}

// TestFilterConsulClient filters every listing endpoint through the Consul
// client, as `consul members -filter` and `consul catalog` do.
func TestFilterConsulClient(t *testing.T) {
	as := startAgents(t, 3)
	c0, c1 := consulClient(t, as[0]), consulClient(t, as[1])
	for i, reg := range []*consul.AgentServiceRegistration{
		{ID: "web-1", Name: "web", Port: 8001, Tags: []string{"blue"}, Meta: map[string]string{"v": "1"},
			Check: &consul.AgentServiceCheck{CheckID: "web-1-ttl", TTL: "1m", Status: "passing"}},
		{ID: "web-2", Name: "web", Port: 8002, Tags: []string{"green"}, Meta: map[string]string{"v": "2"},
			Check: &consul.AgentServiceCheck{CheckID: "web-2-ttl", TTL: "1m", Status: "critical"}},
	} {
		if err := consulClient(t, as[i]).Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Wait(t, 10*time.Second, "both web instances everywhere", func() bool {
		s, _, err := c1.Catalog().Service("web", "", nil)
		return err == nil && len(s) == 2
	})

	filtered := func(expr string) *consul.QueryOptions { return &consul.QueryOptions{Filter: expr} }
	t.Run("agent members", func(t *testing.T) {
		ms, err := c0.Agent().MembersOpts(consul.MembersOpts{Filter: `Name == "n2"`})
		if err != nil || len(ms) != 1 || ms[0].Name != "n2" {
			t.Fatalf("members = %v, %v, want n2 alone", ms, err)
		}
	})
	t.Run("agent services", func(t *testing.T) {
		s, err := c0.Agent().ServicesWithFilter(`Meta.v == "1"`)
		if err != nil || len(s) != 1 || s["web-1"] == nil {
			t.Fatalf("services = %v, %v", s, err)
		}
		s, err = c0.Agent().ServicesWithFilter(`Meta.v == "2"`)
		if err != nil || len(s) != 0 {
			t.Fatalf("services = %v, %v, want none", s, err)
		}
	})
	t.Run("agent checks", func(t *testing.T) {
		ch, err := c0.Agent().ChecksWithFilter(`Status == "passing"`)
		if err != nil || len(ch) != 1 || ch["web-1-ttl"] == nil {
			t.Fatalf("checks = %v, %v", ch, err)
		}
	})
	t.Run("catalog service", func(t *testing.T) {
		s, _, err := c1.Catalog().Service("web", "", filtered(`"green" in ServiceTags`))
		if err != nil || len(s) != 1 || s[0].ServiceID != "web-2" {
			t.Fatalf("service = %v, %v", s, err)
		}
	})
	t.Run("catalog services", func(t *testing.T) {
		s, _, err := c1.Catalog().Services(filtered(`ServiceMeta.v == "2"`))
		if err != nil || len(s) != 1 || len(s["web"]) != 1 || s["web"][0] != "green" {
			t.Fatalf("services = %v, %v", s, err)
		}
	})
	t.Run("catalog nodes", func(t *testing.T) {
		n, _, err := c1.Catalog().Nodes(filtered(`Node != "n0"`))
		if err != nil || len(n) != 2 {
			t.Fatalf("nodes = %v, %v", n, err)
		}
	})
	t.Run("catalog node", func(t *testing.T) {
		n, _, err := c1.Catalog().Node("n0", filtered(`ID == "nope"`))
		if err != nil || n == nil || len(n.Services) != 0 {
			t.Fatalf("node = %+v, %v, want no services", n, err)
		}
	})
	t.Run("health service", func(t *testing.T) {
		e, _, err := c1.Health().Service("web", "", false, filtered(`Service.Port == 8002`))
		if err != nil || len(e) != 1 || e[0].Service.ID != "web-2" {
			t.Fatalf("entries = %v, %v", e, err)
		}
		e, _, err = c1.Health().Service("web", "", false, filtered(`any Checks as c { c.Status == "critical" }`))
		if err != nil || len(e) != 1 || e[0].Service.ID != "web-2" {
			t.Fatalf("entries = %v, %v", e, err)
		}
	})
	t.Run("health checks", func(t *testing.T) {
		ch, _, err := c1.Health().Checks("web", filtered(`Status == "critical"`))
		if err != nil || len(ch) != 1 || ch[0].CheckID != "web-2-ttl" {
			t.Fatalf("checks = %v, %v", ch, err)
		}
	})
	t.Run("health node", func(t *testing.T) {
		ch, _, err := c1.Health().Node("n0", filtered(`CheckID == "serfHealth"`))
		if err != nil || len(ch) != 1 {
			t.Fatalf("checks = %v, %v", ch, err)
		}
	})
	t.Run("health state", func(t *testing.T) {
		ch, _, err := c1.Health().State("any", filtered(`Node == "n1" and ServiceName == "web"`))
		if err != nil || len(ch) != 1 || ch[0].CheckID != "web-2-ttl" {
			t.Fatalf("checks = %v, %v", ch, err)
		}
	})
	t.Run("bad expression", func(t *testing.T) {
		_, _, err := c1.Catalog().Service("web", "", filtered(`ServiceTags ===`))
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Fatalf("err = %v, want 400", err)
		}
		_, err = c0.Agent().MembersOpts(consul.MembersOpts{Filter: `Bogus == 1`})
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Fatalf("err = %v, want 400", err)
		}
	})
}
