package node

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestConfigEntriesWithConsulClient: the official client's ConfigEntries
// and intention calls against live agents, an entry written on one agent
// read on the others.
func TestConfigEntriesWithConsulClient(t *testing.T) {
	as := startAgents(t, 3)
	c0, c2 := consulClient(t, as[0]), consulClient(t, as[2])

	ok, _, err := c0.ConfigEntries().Set(&consul.ServiceConfigEntry{Kind: consul.ServiceDefaults, Name: "web", Protocol: "http"}, nil)
	if err != nil || !ok {
		t.Fatalf("Set: %v %v", ok, err)
	}
	var got consul.ConfigEntry
	testutil.Wait(t, 5*time.Second, "the entry on n2", func() bool {
		got, _, err = c2.ConfigEntries().Get(consul.ServiceDefaults, "web", nil)
		return err == nil
	})
	sd := got.(*consul.ServiceConfigEntry)
	if sd.Protocol != "http" || sd.ModifyIndex == 0 || sd.CreateIndex != sd.ModifyIndex {
		t.Errorf("Get on n2: %+v", sd)
	}
	// CAS: a stale index loses, the current one wins.
	ok, _, err = c2.ConfigEntries().CAS(&consul.ServiceConfigEntry{Kind: consul.ServiceDefaults, Name: "web", Protocol: "tcp"}, sd.ModifyIndex-1, nil)
	if err != nil || ok {
		t.Errorf("CAS with a stale index: %v %v, want false", ok, err)
	}
	ok, _, err = c2.ConfigEntries().CAS(&consul.ServiceConfigEntry{Kind: consul.ServiceDefaults, Name: "web", Protocol: "tcp"}, sd.ModifyIndex, nil)
	if err != nil || !ok {
		t.Errorf("CAS with the current index: %v %v, want true", ok, err)
	}
	list, _, err := c0.ConfigEntries().List(consul.ServiceDefaults, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Wait(t, 5*time.Second, "the CAS write on n0", func() bool {
		e, _, err := c0.ConfigEntries().Get(consul.ServiceDefaults, "web", nil)
		return err == nil && e.(*consul.ServiceConfigEntry).Protocol == "tcp"
	})
	if len(list) != 1 || list[0].GetName() != "web" {
		t.Errorf("List: %v", list)
	}

	// Intentions through Connect(): upsert, read, check, match, delete.
	if _, err := c0.Connect().IntentionUpsert(&consul.Intention{SourceName: "web", DestinationName: "db", Action: consul.IntentionActionDeny}, nil); err != nil {
		t.Fatalf("IntentionUpsert: %v", err)
	}
	testutil.Wait(t, 5*time.Second, "the intention on n2", func() bool {
		allowed, _, err := c2.Connect().IntentionCheck(&consul.IntentionCheck{Source: "web", Destination: "db"}, nil)
		return err == nil && !allowed
	})
	ixn, _, err := c2.Connect().IntentionGetExact("web", "db", nil)
	if err != nil || ixn.Action != consul.IntentionActionDeny || ixn.Precedence != 9 {
		t.Errorf("IntentionGetExact: %+v %v", ixn, err)
	}
	all, _, err := c2.Connect().Intentions(nil)
	if err != nil || len(all) != 1 {
		t.Errorf("Intentions: %v %v", all, err)
	}
	m, _, err := c2.Connect().IntentionMatch(&consul.IntentionMatch{By: consul.IntentionMatchDestination, Names: []string{"db"}}, nil)
	if err != nil || len(m["db"]) != 1 {
		t.Errorf("IntentionMatch: %v %v", m, err)
	}
	e, _, err := c2.ConfigEntries().Get(consul.ServiceIntentions, "db", nil)
	if err != nil || len(e.(*consul.ServiceIntentionsConfigEntry).Sources) != 1 {
		t.Errorf("the intention as a config entry: %v %v", e, err)
	}
	if _, err := c2.Connect().IntentionDeleteExact("web", "db", nil); err != nil {
		t.Fatal(err)
	}
	testutil.Wait(t, 5*time.Second, "the delete on n0", func() bool {
		allowed, _, err := c0.Connect().IntentionCheck(&consul.IntentionCheck{Source: "web", Destination: "db"}, nil)
		return err == nil && allowed
	})
	if _, err := c0.ConfigEntries().Delete(consul.ServiceDefaults, "web", nil); err != nil {
		t.Fatal(err)
	}
	testutil.Wait(t, 5*time.Second, "the delete on n2", func() bool {
		_, _, err := c2.ConfigEntries().Get(consul.ServiceDefaults, "web", nil)
		return err != nil && strings.Contains(err.Error(), "404")
	})
}

// TestConfigHostileInput: malformed, oversized, unsupported and tricky
// writes get 4xx with a reason, and nothing is stored.
func TestConfigHostileInput(t *testing.T) {
	a := startAgent(t, "n0", nil)
	big := strings.Repeat("x", maxBody)
	for _, tc := range []struct{ method, path, body string }{
		{"PUT", "/v1/config", `{`},
		{"PUT", "/v1/config", `[]`},
		{"PUT", "/v1/config", `{"Name":"web"}`},
		{"PUT", "/v1/config", `{"Kind":"proxy-defaults","Name":"global"}`},
		{"PUT", "/v1/config", `{"Kind":"service-defaults"}`},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"../etc"}`},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocol":"smtp"}`},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","MaxInboundConnections":5}`},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Namespace":"team"}`},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Meta":{"bad key":"v"}}`},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Description":"` + big + `"}`},
		{"PUT", "/v1/config?cas=abc", `{"Kind":"service-defaults","Name":"web"}`},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[]}`},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"maybe"}]}`},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"node:","Action":"allow"}]}`},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow","Permissions":[{}, {"Action":"deny"}]}]}`},
		{"GET", "/v1/config/nope", ""},
		{"GET", "/v1/config/service-defaults/missing", ""},
		{"DELETE", "/v1/config/nope/web", ""},
		{"DELETE", "/v1/config/service-defaults/web?cas=-1", ""},
		{"PUT", "/v1/connect/intentions/exact?source=web", `{"Action":"deny"}`},
		{"PUT", "/v1/connect/intentions/exact?source=we%0Ab&destination=db", `{"Action":"deny"}`},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"deny","Permissions":[{"Action":"allow"}]}`},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"deny","SourceName":"api"}`},
		{"GET", "/v1/connect/intentions/match?by=nobody&name=db", ""},
		{"GET", "/v1/connect/intentions/check?source=web", ""},
		{"POST", "/v1/agent/connect/authorize", `{"Target":"db","ClientCertURI":"spiffe://x/svc/web"}`},
	} {
		code, body := request(t, a, tc.method, tc.path, tc.body, nil)
		if code < 400 || code > 499 {
			t.Errorf("%s %s %.60s: %d %q, want 4xx", tc.method, tc.path, tc.body, code, body)
		}
		if strings.Count(strings.TrimSpace(body), "\n") > 0 || strings.TrimSpace(body) == "" {
			t.Errorf("%s %s: reason %q, want one line", tc.method, tc.path, body)
		}
	}
	if got := a.Cluster().EntriesSnapshot(); len(got) != 0 {
		t.Errorf("refused writes stored %d entries: %v", len(got), got)
	}
}

// TestIntentionsEnforcedThroughTheMesh: with the PKI, web → db denied gives
// 403 naming the intention at the caller within a second, existing
// keep-alive connections included; allowed again works; the default
// action deny refuses what no intention allows; all counted.
func TestIntentionsEnforcedThroughTheMesh(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	as := startMesh(t, p, 2)
	_, port := backend(t, "db-on-n1")
	registerDef(t, as[1], map[string]any{"ID": "db-1", "Name": "db", "Address": "127.0.0.1", "Port": port})
	testutil.Wait(t, 5*time.Second, "db seen by n0", visibleOn(t, as[0], "db", 1))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func() (int, string) {
		code, body, err := proxyGet(client, as[0], "db", "/q")
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		return code, body
	}
	if code, body := get(); code != http.StatusOK {
		t.Fatalf("before any intention: %d %q", code, body)
	}
	// The shared proxy calls as node:n0.
	set := func(action string) {
		code, body := request(t, as[0], "PUT", "/v1/connect/intentions/exact?source=node:n0&destination=db",
			fmt.Sprintf(`{"Action":%q}`, action), nil)
		if code != http.StatusOK {
			t.Fatalf("set intention %s: %d %s", action, code, body)
		}
	}
	set(actionDeny)
	start := time.Now()
	var code int
	var body string
	testutil.Wait(t, 5*time.Second, "403 through the mesh", func() bool {
		code, body = get()
		return code == http.StatusForbidden
	})
	took := time.Since(start)
	t.Logf("denied at the caller %v after the write: %q", took, strings.TrimSpace(body))
	if took > time.Second {
		t.Errorf("the deny took %v to apply, want under 1 s", took)
	}
	if !strings.Contains(body, "intention node:n0 => db (deny)") {
		t.Errorf("403 body %q does not name the intention", body)
	}
	set(actionAllow)
	testutil.Wait(t, 5*time.Second, "allowed again", func() bool { code, _ := get(); return code == http.StatusOK })
	denied := as[1].mesh.denied.snapshot()[[2]string{"node:n0", "db"}]
	allowed := as[1].mesh.allowed.snapshot()[[2]string{"node:n0", "db"}]
	if denied == 0 || allowed == 0 {
		t.Errorf("decisions counted: %d denied, %d allowed; want both", denied, allowed)
	}
	if n := as[1].mesh.refused.snapshot()[refusedIntention]; n == 0 {
		t.Errorf("no refusal counted with reason %q", refusedIntention)
	}
	code2, metrics := request(t, as[1], "GET", "/metrics", "", nil)
	if code2 != http.StatusOK || !strings.Contains(metrics, `shoal_mesh_intention_decisions_total{decision="denied",destination="db",source="node:n0"}`) {
		t.Errorf("/metrics lacks the denied decision")
	}
}

// TestDefaultIntentionDeny: with default-intention deny, nothing passes
// without an allowing intention, HTTP through the shared proxy (403) and
// TCP through a sidecar upstream (closed unanswered) alike, and a wildcard
// allow opens both.
func TestDefaultIntentionDeny(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	as := startAgentsWith(t, 2, func(i int, c *Config) {
		p.configure(c, fmt.Sprintf("n%d", i))
		c.DefaultIntention = actionDeny
	})
	_, port := backend(t, "db-on-n1")
	registerDef(t, as[1], map[string]any{"ID": "db-1", "Name": "db", "Address": "127.0.0.1", "Port": port})
	up := testutil.FreePort(t)
	registerDef(t, as[0], map[string]any{"ID": "web-1", "Name": "web", "Port": 1,
		"Connect": map[string]any{"SidecarService": map[string]any{"Proxy": map[string]any{
			"Upstreams": []map[string]any{{"DestinationName": "db", "LocalBindPort": up}}}}}})
	testutil.Wait(t, 5*time.Second, "db seen by n0, web by n1", func() bool {
		return visibleOn(t, as[0], "db", 1)() && visibleOn(t, as[1], "web", 1)()
	})
	client := &http.Client{}
	code, body, err := proxyGet(client, as[0], "db", "/")
	if err != nil || code != http.StatusForbidden || !strings.Contains(body, "default is deny") {
		t.Fatalf("without intentions: %d %q %v, want 403 naming the default", code, body, err)
	}
	upstream := fmt.Sprintf("127.0.0.1:%d", up)
	if line, err := upstreamProbe(upstream); err != nil || line != "" {
		t.Fatalf("web's TCP upstream without intentions: %q %v, want the connection closed unanswered", line, err)
	}
	code, body = request(t, as[0], "PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"*","Action":"allow"}]}`, nil)
	if code != http.StatusOK {
		t.Fatalf("write: %d %s", code, body)
	}
	testutil.Wait(t, 5*time.Second, "the wildcard allow to apply", func() bool {
		code, _, err := proxyGet(client, as[0], "db", "/")
		return err == nil && code == http.StatusOK
	})
	if line, err := upstreamProbe(upstream); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Errorf("web's TCP upstream after the wildcard allow: %q %v", line, err)
	}
	denied := as[1].mesh.denied.snapshot()
	if denied[[2]string{"node:n0", "db"}] == 0 || denied[[2]string{"web", "db"}] == 0 {
		t.Errorf("denials counted %v; want node:n0 and web, each to db", denied)
	}
}
