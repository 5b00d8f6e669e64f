package node

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/shoal-mesh/shoal/gossip"
)

// TestConfigHostileInputChangesNothing sends every new endpoint of the
// config store and the intentions malformed, oversized, wrong-kind,
// path-tricking and stale-CAS requests while entries exist: each gets its
// answer (4xx with a one-line reason; a CAS mismatch Consul's 200 false),
// and the store is exactly as before, stamps included.
func TestConfigHostileInputChangesNothing(t *testing.T) {
	a := startAgent(t, "n0", nil)
	putOK(t, a, "/v1/config", map[string]any{"Kind": "service-defaults", "Name": "web", "Protocol": "http"})
	putOK(t, a, "/v1/connect/intentions/exact?source=web&destination=db", map[string]any{"Action": "deny"})
	before := a.Cluster().EntriesSnapshot()
	web, _ := a.Cluster().Entry("service-defaults", "web")
	stale := web.Stamp - 1

	// An entry over 64 KiB in its stored form, inside the 1 MiB body bound.
	var sources []string
	for i := range 200 {
		sources = append(sources, fmt.Sprintf(`{"Name":"s%d","Action":"allow","Description":%q}`, i, strings.Repeat("d", 400)))
	}
	tooLarge := `{"Kind":"service-intentions","Name":"db","Sources":[` + strings.Join(sources, ",") + `]}`
	var many []string
	for i := range maxIntentionSources + 1 {
		many = append(many, fmt.Sprintf(`{"Name":"s%d","Action":"allow"}`, i))
	}
	tooMany := `{"Kind":"service-intentions","Name":"db","Sources":[` + strings.Join(many, ",") + `]}`

	for _, tc := range []struct {
		method, path, body string
		code               int // 0: any 4xx
	}{
		// Malformed bodies.
		{"PUT", "/v1/config", ``, 400},
		{"PUT", "/v1/config", `null`, 400},
		{"PUT", "/v1/config", `"service-defaults"`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web"} {"Kind":"service-defaults","Name":"web"}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocol":7}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Protocol":"http","Protocol":"tcp","Bogus":1}`, 400},
		{"PUT", "/v1/config", "{\"Kind\":\"service-defaults\",\"Name\":\"web\",\"Meta\":{\"k\":\"a\x01b\"}}", 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web\u202e"}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"we b"}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"` + strings.Repeat("w", 300) + `"}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","LoadBalancer":{"Policy":"fastest"}}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Partition":"team"}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[null]}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow"},{"Name":"web","Action":"deny"}]}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow","Type":"l7"}]}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"web","Action":"allow","Description":"a` + "\\u0007" + `"}]}`, 400},
		{"PUT", "/v1/config", `{"Kind":"service-intentions","Name":"db","Sources":[{"Name":"node:../n1","Action":"allow"}]}`, 400},
		// Oversized: the body, the stored entry, the sources.
		{"PUT", "/v1/config", `{"Kind":"service-defaults","Name":"web","Meta":{"k":"` + strings.Repeat("x", maxBody) + `"}}`, 413},
		{"PUT", "/v1/config", tooLarge, 413},
		{"PUT", "/v1/config", tooMany, 400},
		// Wrong kinds.
		{"PUT", "/v1/config", `{"Kind":"proxy-defaults","Name":"global"}`, 400},
		{"PUT", "/v1/config", `{"Kind":"","Name":"web"}`, 400},
		{"GET", "/v1/config/proxy-defaults", "", 400},
		{"GET", "/v1/config/proxy-defaults/global", "", 400},
		{"DELETE", "/v1/config/proxy-defaults/global", "", 400},
		{"DELETE", "/v1/config/SERVICE-INTENTIONS%00/db", "", 400},
		// Path tricks.
		{"DELETE", "/v1/config/service-defaults/..", "", 0},
		{"DELETE", "/v1/config/service-defaults/%2e%2e", "", 400},
		{"DELETE", "/v1/config/service-defaults/a%2Fb", "", 400},
		{"DELETE", "/v1/config/service-defaults/web%00", "", 400},
		{"DELETE", "/v1/config/service-defaults/web/extra", "", 0},
		{"DELETE", "/v1/config/service-defaults", "", 0},
		{"GET", "/v1/config/service-defaults/..%2f..%2fetc%2fpasswd", "", 404},
		{"PUT", "/v1/config/service-defaults/web", `{"Kind":"service-defaults","Name":"web"}`, 0},
		{"POST", "/v1/config", `{"Kind":"service-defaults","Name":"web"}`, 405},
		// Bad CAS and blocking parameters.
		{"PUT", "/v1/config?cas=-1", `{"Kind":"service-defaults","Name":"web"}`, 400},
		{"PUT", "/v1/config?cas=18446744073709551616", `{"Kind":"service-defaults","Name":"web"}`, 400},
		{"DELETE", "/v1/config/service-defaults/web?cas=x", "", 400},
		{"GET", "/v1/config/service-defaults?index=x", "", 400},
		{"GET", "/v1/config/service-defaults/web?index=1&wait=forever", "", 400},
		{"GET", "/v1/connect/intentions?index=-3", "", 400},
		// The intention endpoints.
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"maybe"}`, 400},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow","Bogus":true}`, 400},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow","SourceType":"l7"}`, 400},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow","DestinationName":"api"}`, 400},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `{"Action":"allow","Description":"` + strings.Repeat("d", maxDescriptionLen+1) + `"}`, 400},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=db", `[`, 400},
		{"PUT", "/v1/connect/intentions/exact?source=web&destination=d%2Fb", `{"Action":"allow"}`, 400},
		{"PUT", "/v1/connect/intentions/exact?source=node%3A&destination=db", `{"Action":"allow"}`, 400},
		{"PUT", "/v1/connect/intentions/exact?destination=db", `{"Action":"allow"}`, 400},
		{"DELETE", "/v1/connect/intentions/exact?source=web", "", 400},
		{"DELETE", "/v1/connect/intentions/exact?source=web&destination=..", "", 400},
		{"GET", "/v1/connect/intentions/exact?source=web&destination=nope", "", 404},
		{"GET", "/v1/connect/intentions/check?source=web&destination=db&source-type=l7", "", 400},
		{"GET", "/v1/connect/intentions/match?by=destination", "", 400},
		{"GET", "/v1/connect/intentions/match?by=source&name=we%0Ab", "", 400},
		{"POST", "/v1/agent/connect/authorize", `{"Target":"db"`, 400},
		{"POST", "/v1/agent/connect/authorize", `{"Target":"../db","ClientCertURI":"spiffe://x/svc/web"}`, 400},
		{"POST", "/v1/agent/connect/authorize", `{"Target":"db","ClientCertURI":"spiffe://x/svc/web","Bogus":1}`, 400},
	} {
		code, body := request(t, a, tc.method, tc.path, tc.body, nil)
		if (tc.code != 0 && code != tc.code) || code < 400 || code > 499 {
			want := "4xx"
			if tc.code != 0 {
				want = fmt.Sprint(tc.code)
			}
			t.Errorf("%s %s %.80s: %d %q, want %s", tc.method, tc.path, tc.body, code, body, want)
		}
		if strings.Count(strings.TrimSpace(body), "\n") > 0 || strings.TrimSpace(body) == "" {
			t.Errorf("%s %s: reason %q, want one line", tc.method, tc.path, body)
		}
	}

	// CAS conflicts: Consul's answer is 200 and false, and nothing changes.
	for _, tc := range []struct{ method, path, body string }{
		{"PUT", fmt.Sprintf("/v1/config?cas=%d", stale), `{"Kind":"service-defaults","Name":"web","Protocol":"tcp"}`},
		{"PUT", "/v1/config?cas=0", `{"Kind":"service-defaults","Name":"web","Protocol":"tcp"}`},
		{"PUT", "/v1/config?cas=5", `{"Kind":"service-defaults","Name":"new","Protocol":"tcp"}`},
		{"DELETE", fmt.Sprintf("/v1/config/service-defaults/web?cas=%d", stale), ""},
		{"DELETE", "/v1/config/service-defaults/web?cas=0", ""},
	} {
		code, body := request(t, a, tc.method, tc.path, tc.body, nil)
		if code != http.StatusOK || strings.TrimSpace(body) != "false" {
			t.Errorf("%s %s: %d %q, want 200 false", tc.method, tc.path, code, body)
		}
	}

	after := a.Cluster().EntriesSnapshot()
	if !reflect.DeepEqual(before, after) {
		t.Errorf("refused requests changed the store:\nbefore %s\nafter  %s", entriesJSON(before), entriesJSON(after))
	}
}

func entriesJSON(es []gossip.Entry) string {
	b, _ := json.Marshal(es)
	return string(b)
}

// TestConfigEntryCountLimit: with MaxEntries entries held (tombstones
// count), a new entry is refused with 409 and a reason, nothing stored,
// while existing entries can still be updated and deleted.
func TestConfigEntryCountLimit(t *testing.T) {
	a := startAgent(t, "n0", nil)
	for i := range gossip.MaxEntries {
		if _, ok, err := a.cluster.PutEntry("service-defaults", fmt.Sprintf("s%05d", i), json.RawMessage(`{"Kind":"service-defaults","Name":"x"}`), nil); !ok || err != nil {
			t.Fatalf("entry %d: %v %v", i, ok, err)
		}
	}
	code, body := request(t, a, "PUT", "/v1/config", `{"Kind":"service-defaults","Name":"one-more"}`, nil)
	if code != http.StatusConflict || !strings.Contains(body, "10000 config entries") {
		t.Errorf("a write past the limit: %d %q, want 409 naming the limit", code, body)
	}
	code, body = request(t, a, "PUT", "/v1/connect/intentions/exact?source=web&destination=one-more", `{"Action":"deny"}`, nil)
	if code != http.StatusConflict {
		t.Errorf("an intention past the limit: %d %q, want 409", code, body)
	}
	if _, ok := a.Cluster().Entry("service-defaults", "one-more"); ok {
		t.Error("the refused entry was stored")
	}
	if n := len(a.Cluster().EntriesSnapshot()); n != gossip.MaxEntries {
		t.Errorf("%d entries held, want %d", n, gossip.MaxEntries)
	}
	putOK(t, a, "/v1/config", map[string]any{"Kind": "service-defaults", "Name": "s00001", "Protocol": "http"})
	if code, body := request(t, a, "DELETE", "/v1/config/service-defaults/s00002", "", nil); code != http.StatusOK {
		t.Errorf("a delete at the limit: %d %q", code, body)
	}
}
