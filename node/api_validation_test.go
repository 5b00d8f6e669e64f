package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestRegisterRejectsBadInput sends bad registrations: each must be answered
// 4xx with a one-line reason and leave the agent exactly as it was: same
// services, same catalog version.
func TestRegisterRejectsBadInput(t *testing.T) {
	a := startAgent(t, "n0", nil)
	register(t, a, `{"Name":"web","ID":"web-1","Port":8080,"Tags":["v1"],"Meta":{"team":"a"}}`)

	manyTags := make([]string, maxTags+1)
	for i := range manyTags {
		manyTags[i] = fmt.Sprintf("t%d", i)
	}
	tooManyTags, _ := json.Marshal(map[string]any{"Name": "web", "Tags": manyTags})
	longMeta, _ := json.Marshal(map[string]any{"Name": "web", "Meta": map[string]string{"k": strings.Repeat("x", maxMetaValLen+1)}})
	huge, _ := json.Marshal(map[string]any{"Name": "web", "Meta": map[string]string{"k": strings.Repeat("x", maxBody)}})

	for _, tc := range []struct {
		name string
		body string
		code int // 0: 400
	}{
		{"malformed JSON", `{"Name":"web"`, 0},
		{"not JSON", `Name=web`, 0},
		{"port as string", `{"Name":"web","Port":"80"}`, 0},
		{"tags as string", `{"Name":"web","Tags":"x"}`, 0},
		{"meta as list", `{"Name":"web","Meta":["a"]}`, 0},
		{"array body", `[{"Name":"web"}]`, 0},
		{"empty body", ``, 0},
		{"whitespace body", " \n\t", 0},
		{"null body", `null`, 0},
		{"missing name", `{"ID":"web-2","Port":80}`, 0},
		{"empty name", `{"Name":""}`, 0},
		{"name with space", `{"Name":"my web"}`, 0},
		{"name with dot", `{"Name":"web.prod"}`, 0},
		{"name with NUL", `{"Name":"web\u0000x"}`, 0},
		{"name with CRLF", `{"Name":"web\r\nX-Injected: 1"}`, 0},
		{"name with RTL override", `{"Name":"web\u202egpj"}`, 0},
		{"name leading dash", `{"Name":"-web"}`, 0},
		{"name over 63 chars", `{"Name":"` + strings.Repeat("a", maxNameLen+1) + `"}`, 0},
		{"ID with slash", `{"Name":"web","ID":"web/1"}`, 0},
		{"ID with space", `{"Name":"web","ID":"web 1"}`, 0},
		{"ID path traversal", `{"Name":"web","ID":"../etc"}`, 0},
		{"ID over 128 chars", `{"Name":"web","ID":"` + strings.Repeat("a", maxIDLen+1) + `"}`, 0},
		{"port 0", `{"Name":"web","Port":0}`, 0},
		{"port -1", `{"Name":"web","Port":-1}`, 0},
		{"port 65536", `{"Name":"web","Port":65536}`, 0},
		{"port fraction", `{"Name":"web","Port":80.5}`, 0},
		{"bad address", `{"Name":"web","Address":"not an address"}`, 0},
		{"kind connect-proxy", `{"Name":"web","Kind":"connect-proxy"}`, 0},
		{"empty tag", `{"Name":"web","Tags":[""]}`, 0},
		{"tag with control char", `{"Name":"web","Tags":["v1\u0007"]}`, 0},
		{"tag with newline", `{"Name":"web","Tags":["a\nb"]}`, 0},
		{"tag with RTL override", `{"Name":"web","Tags":["\u202ex"]}`, 0},
		{"too many tags", string(tooManyTags), 0},
		{"meta key with space", `{"Name":"web","Meta":{"bad key":"v"}}`, 0},
		{"meta key with dot", `{"Name":"web","Meta":{"a.b":"v"}}`, 0},
		{"meta key empty", `{"Name":"web","Meta":{"":"v"}}`, 0},
		{"meta value over 1024 bytes", string(longMeta), 0},
		{"meta value with control char", `{"Name":"web","Meta":{"k":"a\u001bb"}}`, 0},
		{"weights passing 0", `{"Name":"web","Weights":{"Passing":0,"Warning":1}}`, 0},
		{"weights negative warning", `{"Name":"web","Weights":{"Passing":1,"Warning":-1}}`, 0},
		{"script check", `{"Name":"web","Check":{"Args":["/bin/true"],"Interval":"10s"}}`, 0},
		{"script check legacy", `{"Name":"web","Check":{"ScriptArgs":["/bin/true"],"Interval":"10s"}}`, 0},
		{"check with two kinds", `{"Name":"web","Check":{"HTTP":"http://127.0.0.1:1/","TCP":"127.0.0.1:1","Interval":"10s"}}`, 0},
		{"check with no kind", `{"Name":"web","Check":{"Interval":"10s"}}`, 0},
		{"null check in list", `{"Name":"web","Checks":[null]}`, 0},
		{"HTTP check bad URL", `{"Name":"web","Check":{"HTTP":"not a url","Interval":"10s"}}`, 0},
		{"HTTP check ftp URL", `{"Name":"web","Check":{"HTTP":"ftp://127.0.0.1/","Interval":"10s"}}`, 0},
		{"HTTP check bad method", `{"Name":"web","Check":{"HTTP":"http://127.0.0.1/","Method":"get it","Interval":"10s"}}`, 0},
		{"TCP check no port", `{"Name":"web","Check":{"TCP":"127.0.0.1","Interval":"10s"}}`, 0},
		{"check interval below 100ms", `{"Name":"web","Check":{"HTTP":"http://127.0.0.1/","Interval":"50ms"}}`, 0},
		{"check without interval", `{"Name":"web","Check":{"TCP":"127.0.0.1:1"}}`, 0},
		{"check bad duration", `{"Name":"web","Check":{"TCP":"127.0.0.1:1","Interval":"soon"}}`, 0},
		{"check negative TTL", `{"Name":"web","Check":{"TTL":"-1s"}}`, 0},
		{"check bad status", `{"Name":"web","Check":{"TTL":"10s","Status":"fine"}}`, 0},
		{"check bad ID", `{"Name":"web","Check":{"CheckID":"a b","TTL":"10s"}}`, 0},
		{"duplicate check IDs", `{"Name":"web","Checks":[{"CheckID":"c","TTL":"10s"},{"CheckID":"c","TTL":"20s"}]}`, 0},
		{"duplicate check IDs via Check and Checks", `{"Name":"web","Check":{"ID":"c","TTL":"10s"},"Checks":[{"CheckID":"c","TTL":"20s"}]}`, 0},
		{"trailing garbage", `{"Name":"web"} x`, 0},
		{"two JSON values", `{"Name":"web"}{"Name":"db"}`, 0},
		{"body over 1 MiB", string(huge), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.code
			if want == 0 {
				want = http.StatusBadRequest
			}
			before, version := agentServicesRaw(t, a), a.reg.current().Version
			code, body := do(t, a, "PUT", "/v1/agent/service/register", tc.body)
			if code != want {
				t.Errorf("status %d (%q), want %d", code, body, want)
			}
			checkOneLineReason(t, body)
			if after := agentServicesRaw(t, a); !bytes.Equal(before, after) {
				t.Errorf("services changed:\nbefore %s\nafter  %s", before, after)
			}
			if v := a.reg.current().Version; v != version {
				t.Errorf("catalog version moved from %d to %d", version, v)
			}
		})
	}
}

// TestAPIErrors covers the other ways a request can be wrong.
func TestAPIErrors(t *testing.T) {
	a := startAgent(t, "n0", nil)
	register(t, a, `{"Name":"web"}`)
	version := a.reg.current().Version
	for _, tc := range []struct {
		name, method, path string
		want               int
	}{
		{"deregister unknown ID", "PUT", "/v1/agent/service/deregister/nope", http.StatusNotFound},
		{"unknown agent service", "GET", "/v1/agent/service/nope", http.StatusNotFound},
		{"GET on register", "GET", "/v1/agent/service/register", http.StatusMethodNotAllowed},
		{"DELETE on deregister", "DELETE", "/v1/agent/service/deregister/web", http.StatusMethodNotAllowed},
		{"blocking index not a number", "GET", "/v1/catalog/services?index=abc", http.StatusBadRequest},
		{"blocking index negative", "GET", "/v1/health/service/web?index=-1", http.StatusBadRequest},
		{"blocking bad wait", "GET", "/v1/catalog/services?index=1&wait=forever", http.StatusBadRequest},
		{"bogus health state", "GET", "/v1/health/state/bogus", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, a, tc.method, tc.path, nil)
			if code != tc.want {
				t.Errorf("%s %s: status %d (%q), want %d", tc.method, tc.path, code, body, tc.want)
			}
			checkOneLineReason(t, body)
		})
	}
	if v := a.reg.current().Version; v != version {
		t.Errorf("catalog version moved from %d to %d", version, v)
	}
	if svcs := agentServices(t, a); len(svcs) != 1 || svcs["web"].Service != "web" {
		t.Errorf("services = %v, want just web", svcs)
	}
}

// TestRegisterAcceptsEdgeCases registers valid but unusual definitions.
func TestRegisterAcceptsEdgeCases(t *testing.T) {
	a := startAgent(t, "n0", nil)

	t.Run("no port, ID from name", func(t *testing.T) {
		register(t, a, `{"Name":"noport"}`)
		s, ok := agentServices(t, a)["noport"]
		if !ok || s.ID != "noport" || s.Service != "noport" || s.Port != 0 {
			t.Fatalf("noport = %+v (present %v)", s, ok)
		}
		if s.Weights != (Weights{Passing: 1, Warning: 1}) {
			t.Errorf("default weights = %+v, want 1/1", s.Weights)
		}
	})

	t.Run("re-register replaces", func(t *testing.T) {
		register(t, a, `{"Name":"web","ID":"web-1","Port":80,"Tags":["v1"],"Meta":{"a":"1"}}`)
		v1 := a.reg.current().Version
		register(t, a, `{"Name":"web","ID":"web-1","Port":81,"Tags":["v2","canary"]}`)
		if v := a.reg.current().Version; v <= v1 {
			t.Errorf("version %d after re-register, want > %d", v, v1)
		}
		svcs := agentServices(t, a)
		s := svcs["web-1"]
		if s.Port != 81 || strings.Join(s.Tags, ",") != "v2,canary" || len(s.Meta) != 0 {
			t.Errorf("web-1 = %+v, want port 81, tags v2,canary, no meta", s)
		}
		e := healthEntries(t, a, "web", "")
		if len(e) != 1 || strings.Join(e[0].Service.Tags, ",") != "v2,canary" {
			t.Errorf("health entries = %+v, want one web-1 with the new tags", e)
		}
	})

	t.Run("limits exactly", func(t *testing.T) {
		tags := make([]string, maxTags)
		for i := range tags {
			tags[i] = fmt.Sprintf("t%d", i)
		}
		name := strings.Repeat("n", maxNameLen)
		body, _ := json.Marshal(map[string]any{
			"Name": name, "ID": strings.Repeat("i", maxIDLen), "Port": 65535, "Tags": tags,
			"Meta": map[string]string{"k": strings.Repeat("x", maxMetaValLen)},
		})
		register(t, a, string(body))
		s := agentServices(t, a)[strings.Repeat("i", maxIDLen)]
		if s.Service != name || len(s.Tags) != maxTags || len(s.Meta["k"]) != maxMetaValLen || s.Port != 65535 {
			t.Errorf("service at the limits not stored as sent: %d tags, meta %d bytes, port %d",
				len(s.Tags), len(s.Meta["k"]), s.Port)
		}
	})

	t.Run("unicode tag and meta", func(t *testing.T) {
		register(t, a, `{"Name":"intl","Tags":["zone=zürich","日本"],"Meta":{"owner":"Zoë"}}`)
		s := agentServices(t, a)["intl"]
		if strings.Join(s.Tags, ",") != "zone=zürich,日本" || s.Meta["owner"] != "Zoë" {
			t.Errorf("intl = %+v", s)
		}
	})

	t.Run("trailing newline", func(t *testing.T) {
		register(t, a, "{\"Name\":\"nl\"}\n")
	})

	t.Run("unknown fields ignored", func(t *testing.T) {
		// Consul clients send fields Shoal does not know (Proxy, Connect,
		// Namespace...): they must not break registration.
		register(t, a, `{"Name":"extra","Namespace":"","Proxy":null,"SocketPath":""}`)
	})

	t.Run("checks stored critical by default", func(t *testing.T) {
		// Only checks whose state cannot move within the test: TTLs far
		// off, and an HTTP check against a port nothing listens on.
		register(t, a, `{"Name":"checked","Port":1,"Checks":[
			{"Name":"alive","TTL":"30s"},
			{"CheckID":"http-1","HTTP":"http://127.0.0.1:1/health","Interval":"10s","Timeout":"1s"},
			{"TTL":"30s","Status":"passing"}]}`)
		ls := a.reg.current().Services["checked"]
		if ls == nil || len(ls.Checks) != 3 {
			t.Fatalf("checked = %+v, want 3 checks", ls)
		}
		wantIDs := []string{"service:checked:1", "http-1", "service:checked:3"}
		wantStatus := []string{"critical", "critical", "passing"}
		for i, c := range ls.Checks {
			if c.Def.CheckID != wantIDs[i] || c.Status != wantStatus[i] || c.Def.ServiceID != "checked" {
				t.Errorf("check %d = %s %s (service %s), want %s %s", i, c.Def.CheckID, c.Status, c.Def.ServiceID,
					wantIDs[i], wantStatus[i])
			}
		}
		if e := healthEntries(t, a, "checked", "?passing"); len(e) != 0 {
			t.Errorf("critical instance listed as passing: %+v", e)
		}
		if e := healthEntries(t, a, "checked", ""); len(e) != 1 || len(e[0].Checks) != 4 {
			t.Errorf("entries = %+v, want one instance with serfHealth and 3 checks", e)
		}
	})
}

// register registers a service on an agent over the API and fails the test
// unless it is answered 200.
func register(t *testing.T, a *Agent, body string) {
	t.Helper()
	code, out := do(t, a, "PUT", "/v1/agent/service/register", body)
	if code != http.StatusOK {
		t.Fatalf("register %s: %d %s", body, code, out)
	}
}

// agentServicesRaw returns the body of /v1/agent/services.
func agentServicesRaw(t *testing.T, a *Agent) []byte {
	t.Helper()
	code, body := do(t, a, "GET", "/v1/agent/services", nil)
	if code != http.StatusOK {
		t.Fatalf("agent/services: %d %s", code, body)
	}
	return body
}

// agentServices returns /v1/agent/services decoded.
func agentServices(t *testing.T, a *Agent) map[string]AgentService {
	t.Helper()
	var out map[string]AgentService
	if err := json.Unmarshal(agentServicesRaw(t, a), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkOneLineReason checks that an error body is one non-empty line.
func checkOneLineReason(t *testing.T, body []byte) {
	t.Helper()
	msg := strings.TrimSuffix(string(body), "\n")
	if strings.TrimSpace(msg) == "" || strings.ContainsAny(msg, "\r\n") {
		t.Errorf("reason %q: want one non-empty line", body)
	}
}
