package node

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// decodeRegistration runs a body through what PUT /v1/agent/service/register
// does before storing: decodeBody, then normalizeService. It returns the
// answer's status (200 when accepted).
func decodeRegistration(body []byte) (ServiceDefinition, []*checkState, int) {
	var def ServiceDefinition
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPut, "/v1/agent/service/register", bytes.NewReader(body))
	if !decodeBody(w, r, &def) {
		return def, nil, w.Code
	}
	checks, err := normalizeService(&def)
	if err != nil {
		return def, nil, http.StatusBadRequest
	}
	return def, checks, http.StatusOK
}

// FuzzRegister feeds arbitrary bodies to the registration decoder and
// validator. Invariants: no panic; a rejection is a 4xx; an accepted
// definition respects the documented limits, and normalizing is a fixed
// point: re-encoding what was accepted (its checks included) and decoding
// it again gives the same definition and checks.
func FuzzRegister(f *testing.F) {
	for _, s := range []string{
		`{"Name":"web"}`,
		`{"Name":"web","ID":"web-1","Port":8080,"Address":"10.0.0.1","Tags":["v1","zone=zürich"],"Meta":{"team":"a"}}`,
		`{"Name":"web","Weights":{"Passing":3,"Warning":0},"EnableTagOverride":true}`,
		`{"Name":"web","Check":{"TTL":"10s","Status":"passing","Notes":"n"}}`,
		`{"Name":"web","Checks":[{"HTTP":"http://127.0.0.1:8080/health","Interval":"10s","Timeout":"1s","Method":"POST","Header":{"X-A":["b"]},"Body":"{}"},{"TCP":"127.0.0.1:1","Interval":1000000000}]}`,
		`{"Name":"web","Check":{"ID":"c","TTL":"10s"},"Checks":[{"CheckID":"c","TTL":"20s"}]}`,
		`{"Name":"web","Check":{"TTL":"5s","DeregisterCriticalServiceAfter":"1m","SuccessBeforePassing":2,"FailuresBeforeCritical":3}}`,
		`{"Name":"web\u202egpj"}`, `{"Name":"web\u0000"}`, `{"Name":"web","Port":65536}`, `{"Name":"web","Port":-1}`,
		`{"Name":"web","Check":{"HTTP":"http://x/","Interval":"1s","Header":{"X":["a\r\nb"]}}}`,
		`{"Name":"web","Check":{"TTL":1e300}}`, `{"Name":"web","Check":{"TTL":-1e300}}`,
		`{"Name":"web","Meta":{"k":"` + strings.Repeat("v", maxMetaValLen) + `"}}`,
		`{"Name":"a","Address":"host.example."}`, `{"Name":"a","Address":"::1"}`,
		`{"Name":"web"} x`, `null`, `[]`, ``, `{`, `{"Name":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		def, checks, code := decodeRegistration(body)
		if code != http.StatusOK {
			if code < 400 || code > 499 {
				t.Fatalf("rejected with status %d", code)
			}
			return
		}
		checkLimits(t, &def, checks)

		// Fixed point: the accepted definition, with its normalized checks
		// written out, normalizes to itself.
		again := def
		for _, c := range checks {
			again.Checks = append(again.Checks, &c.Def)
		}
		b, err := json.Marshal(again)
		if err != nil {
			t.Fatalf("re-encoding an accepted definition: %v", err)
		}
		def2, checks2, code := decodeRegistration(b)
		if code != http.StatusOK {
			t.Fatalf("re-encoded definition %s rejected with %d", b, code)
		}
		if !reflect.DeepEqual(def, def2) {
			t.Fatalf("definition changed by a round trip:\n%+v\n%+v", def, def2)
		}
		if len(checks) != len(checks2) {
			t.Fatalf("%d checks became %d", len(checks), len(checks2))
		}
		for i := range checks {
			if !reflect.DeepEqual(checks[i].Def, checks2[i].Def) || checks[i].Status != checks2[i].Status {
				t.Fatalf("check %d changed by a round trip:\n%+v\n%+v", i, checks[i].Def, checks2[i].Def)
			}
		}
	})
}

// checkLimits asserts what an accepted registration may hold.
func checkLimits(t *testing.T, def *ServiceDefinition, checks []*checkState) {
	t.Helper()
	if validateName(def.Name) != nil || validateID("service ID", def.ID) != nil {
		t.Fatalf("accepted name %q, ID %q", def.Name, def.ID)
	}
	if def.Port != nil && (*def.Port < 1 || *def.Port > 65535) {
		t.Fatalf("accepted port %d", *def.Port)
	}
	if len(def.Tags) > maxTags || len(def.Meta) > maxMetaPairs || len(checks) > maxChecks {
		t.Fatalf("accepted %d tags, %d meta, %d checks", len(def.Tags), len(def.Meta), len(checks))
	}
	for _, s := range append(append([]string{def.Address}, def.Tags...), metaValues(def.Meta)...) {
		if !utf8.ValidString(s) || strings.ContainsAny(s, "\x00\r\n\u202e") {
			t.Fatalf("accepted text %q", s)
		}
	}
	if def.Weights == nil || def.Weights.Passing < 1 {
		t.Fatalf("accepted weights %+v", def.Weights)
	}
	if def.Check != nil || def.Checks != nil {
		t.Fatalf("checks left on the definition")
	}
	ids := make(map[string]bool)
	for _, c := range checks {
		if ids[c.Def.CheckID] {
			t.Fatalf("duplicate check ID %q accepted", c.Def.CheckID)
		}
		ids[c.Def.CheckID] = true
		if c.Def.ServiceID != def.ID || c.Def.Interval < 0 || c.Def.TTL < 0 || len(c.Def.HTTP) > maxURLLen {
			t.Fatalf("accepted check %+v", c.Def)
		}
	}
	// What gets replicated stays small: it travels in every catalog delta.
	ls := &localService{Def: *def, Checks: checks}
	b, err := json.Marshal(ls.gossipService(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 256<<10 {
		t.Fatalf("replicated service of %d bytes", len(b))
	}
}

func metaValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
