package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// queryAgent is a fakeAgent that also records each request's query, which
// the config and intention endpoints carry their arguments in. Routes are
// still chosen by method and path alone.
type queryAgent struct {
	*fakeAgent

	queryMu sync.Mutex // guards queries
	queries []string
}

func newQueryAgent(t *testing.T, routes map[string]reply) *queryAgent {
	t.Helper()
	a := &queryAgent{fakeAgent: &fakeAgent{routes: routes}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.queryMu.Lock()
		a.queries = append(a.queries, r.URL.RawQuery)
		a.queryMu.Unlock()
		a.serve(w, r)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// calls returns "METHOD /path?query" of every request received, in order.
func (a *queryAgent) calls() []string {
	reqs := a.requests()
	a.queryMu.Lock()
	defer a.queryMu.Unlock()
	for i := range reqs {
		if i < len(a.queries) && a.queries[i] != "" {
			reqs[i] += "?" + a.queries[i]
		}
	}
	return reqs
}

// wantCalls fails the test unless the agent got exactly calls.
func (a *queryAgent) wantCalls(t *testing.T, calls ...string) {
	t.Helper()
	if calls == nil {
		calls = []string{}
	}
	if got := a.calls(); !reflect.DeepEqual(got, calls) {
		t.Errorf("requests %q, want %q", got, calls)
	}
}

// wantJSONBody fails the test unless request i carried JSON equal to want.
func (a *queryAgent) wantJSONBody(t *testing.T, i int, want string) {
	t.Helper()
	req := a.request(t, i)
	if req.ContentType != "application/json" {
		t.Errorf("Content-Type %q, want application/json", req.ContentType)
	}
	var got, exp any
	if err := json.Unmarshal([]byte(req.Body), &got); err != nil {
		t.Fatalf("body %q is not JSON: %v", req.Body, err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("bad want %q: %v", want, err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("body %s\nwant %s", req.Body, want)
	}
}

// runCLIStdin is runCLI with stdin.
func runCLIStdin(t *testing.T, stdin string, args ...string) (stdout string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter, app.Reader = &out, &errOut, strings.NewReader(stdin)
	err = app.Run(append([]string{"shoal"}, args...))
	return out.String(), err
}

// writeFile writes content to name in a fresh directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigCmdWrite(t *testing.T) {
	tests := []struct {
		name     string
		file     string // written to a file; "" means stdin is used
		stdin    string
		wantBody string
		wantOut  string
	}{
		{
			name: "HCL, snake_case",
			file: `
kind     = "service-defaults"
name     = "web"
protocol = "http"
load_balancer {
  policy = "ring_hash"
  ring_hash_config { minimum_ring_size = 1024 }
  hash_policies = [{ field = "header", field_value = "x-user" }]
}
meta {
  owner_team = "payments"
  "Build-ID" = "42"
}
`,
			wantBody: `{"Kind":"service-defaults","Name":"web","Protocol":"http",
				"LoadBalancer":{"Policy":"ring_hash","RingHashConfig":{"MinimumRingSize":1024},
					"HashPolicies":[{"Field":"header","FieldValue":"x-user"}]},
				"Meta":{"owner_team":"payments","Build-ID":"42"}}`,
			wantOut: "Config entry written: service-defaults/web\n",
		},
		{
			name: "HCL, one sources block stays a list",
			file: `
Kind = "service-intentions"
Name = "db"
Sources {
  Name        = "web"
  Action      = "deny"
  Description = "web reads db through api"
}
`,
			wantBody: `{"Kind":"service-intentions","Name":"db",
				"Sources":[{"Name":"web","Action":"deny","Description":"web reads db through api"}]}`,
			wantOut: "Config entry written: service-intentions/db\n",
		},
		{
			name: "HCL, repeated sources blocks",
			file: `
kind = "service-intentions"
name = "db"
sources {
  name   = "web"
  action = "deny"
}
sources {
  name   = "node:web-1"
  action = "allow"
}
`,
			wantBody: `{"Kind":"service-intentions","Name":"db",
				"Sources":[{"Name":"web","Action":"deny"},{"Name":"node:web-1","Action":"allow"}]}`,
			wantOut: "Config entry written: service-intentions/db\n",
		},
		{
			name:     "JSON, CamelCase, big integer kept exact",
			file:     `{"Kind":"service-defaults","Name":"web","Protocol":"tcp","Meta":{"n":"1"},"MaxInboundConnections":9007199254740993}`,
			wantBody: `{"Kind":"service-defaults","Name":"web","Protocol":"tcp","Meta":{"n":"1"},"MaxInboundConnections":9007199254740993}`,
			wantOut:  "Config entry written: service-defaults/web\n",
		},
		{
			name:     "JSON from stdin, snake_case",
			stdin:    `{"kind":"service-defaults","name":"api","load_balancer":{"policy":"least_request"},"external_sni":"api.example"}`,
			wantBody: `{"Kind":"service-defaults","Name":"api","LoadBalancer":{"Policy":"least_request"},"ExternalSNI":"api.example"}`,
			wantOut:  "Config entry written: service-defaults/api\n",
		},
		{
			name:     "HCL from stdin",
			stdin:    "kind = \"service-defaults\"\nname = \"db\"\nprotocol = \"tcp\"\n",
			wantBody: `{"Kind":"service-defaults","Name":"db","Protocol":"tcp"}`,
			wantOut:  "Config entry written: service-defaults/db\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, map[string]reply{"PUT /v1/config": {body: "true"}})
			arg := "-"
			if tt.file != "" {
				arg = writeFile(t, "entry.hcl", tt.file)
			}
			out, err := runCLIStdin(t, tt.stdin, "config", "write", "--http-addr", agent.addr(), arg)
			if err != nil {
				t.Fatalf("config write: %v", err)
			}
			if out != tt.wantOut {
				t.Errorf("output %q, want %q", out, tt.wantOut)
			}
			agent.wantCalls(t, "PUT /v1/config")
			agent.wantJSONBody(t, 0, tt.wantBody)
		})
	}
}

func TestConfigCmdWriteCAS(t *testing.T) {
	const entry = `{"Kind":"service-defaults","Name":"web","Protocol":"http"}`
	tests := []struct {
		name    string
		index   string
		answer  string
		wantOut string
		wantErr []string
	}{
		{name: "written", index: "7", answer: "true", wantOut: "Config entry written: service-defaults/web\n"},
		{name: "changed meanwhile", index: "7", answer: "false", wantErr: []string{"CAS check failed", "service-defaults/web", "changed since ModifyIndex 7"}},
		{name: "create only, absent", index: "0", answer: "true", wantOut: "Config entry written: service-defaults/web\n"},
		{name: "create only, exists", index: "0", answer: "false", wantErr: []string{"CAS check failed", "service-defaults/web already exists"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, map[string]reply{"PUT /v1/config": {body: tt.answer}})
			out, err := runCLIStdin(t, entry, "config", "write", "--http-addr", agent.addr(), "--cas", "--modify-index", tt.index, "-")
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr...)
			} else if err != nil {
				t.Fatalf("config write: %v", err)
			}
			if out != tt.wantOut {
				t.Errorf("output %q, want %q", out, tt.wantOut)
			}
			agent.wantCalls(t, "PUT /v1/config?cas="+tt.index)
			agent.wantJSONBody(t, 0, entry)
		})
	}
}

func TestConfigCmdWriteBadInput(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := file("good.json", `{"Kind":"service-defaults","Name":"web"}`)
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  []string
	}{
		{"no file", nil, "", []string{"config write takes one FILE", "got 0"}},
		{"two files", []string{good, good}, "", []string{"got 2"}},
		{"flag after the file", []string{good, "--cas"}, "", []string{"flag --cas must come before", "shoal config write --help"}},
		{"missing file", []string{filepath.Join(dir, "nosuch.hcl")}, "", []string{"nosuch.hcl", "no such file"}},
		{"empty file", []string{file("empty.hcl", " \n")}, "", []string{"empty.hcl: empty"}},
		{"empty stdin", []string{"-"}, "", []string{"stdin: empty"}},
		{"invalid JSON", []string{file("bad.json", `{"Kind": "service-defaults",}`)}, "", []string{"bad.json: invalid JSON"}},
		{"JSON after the entry", []string{file("two.json", `{"Kind":"a","Name":"b"} {}`)}, "", []string{"invalid JSON"}},
		{"JSON list", []string{"-"}, `[{"Kind":"service-defaults","Name":"web"}]`, []string{"stdin: a JSON list"}},
		{"invalid HCL", []string{file("bad.hcl", "kind = \"service-defaults\"\nload_balancer {\n")}, "", []string{"bad.hcl: invalid HCL"}},
		{"no kind", []string{"-"}, `name = "web"`, []string{"stdin: no Kind"}},
		{"no kind, no name", []string{"-"}, `protocol = "http"`, []string{"no Kind", "no Name"}},
		{"empty name", []string{"-"}, `{"Kind":"service-defaults","Name":" "}`, []string{"empty Name"}},
		{"kind not a string", []string{"-"}, `{"Kind":3,"Name":"web"}`, []string{"Kind must be a string"}},
		{"kind given twice", []string{"-"}, `{"Kind":"service-defaults","kind":"service-defaults","Name":"web"}`, []string{`"Kind" and "kind" are both the field Kind`}},
		{"cas without index", []string{"--cas", good}, "", []string{"--cas needs --modify-index"}},
		{"index without cas", []string{"--modify-index", "3", good}, "", []string{"--modify-index is only used with --cas"}},
		{"negative index", []string{"--cas", "--modify-index", "-1", good}, "", []string{"modify-index", "shoal config write --help"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, map[string]reply{"PUT /v1/config": {body: "true"}})
			out, err := runCLIStdin(t, tt.stdin, append([]string{"config", "write", "--http-addr", agent.addr()}, tt.args...)...)
			wantErr(t, err, tt.want...)
			if out != "" {
				t.Errorf("printed %q", out)
			}
			wantNoRequests(t, agent.fakeAgent)
		})
	}
}

func TestConfigCmdWriteRejected(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{
		"PUT /v1/config": {status: 400, body: "service-defaults web: invalid Protocol \"htp\": want http, http2, grpc or tcp\n"},
	})
	_, err := runCLIStdin(t, `{"Kind":"service-defaults","Name":"web","Protocol":"htp"}`, "config", "write", "--http-addr", agent.addr(), "-")
	wantErr(t, err, "config write service-defaults/web", "400", `invalid Protocol "htp"`)
}

func TestConfigCmdRead(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{
		"GET /v1/config/service-defaults/web": {body: `{"Kind":"service-defaults","Name":"web","Protocol":"http","Meta":{"b":"1","a":"2"},"CreateIndex":3,"ModifyIndex":1765000000000000001}`},
	})
	out, _, err := runCLI(t, "config", "read", "--http-addr", agent.addr(), "--kind", "service-defaults", "--name", "web")
	if err != nil {
		t.Fatalf("config read: %v", err)
	}
	want := `{
  "Kind": "service-defaults",
  "Name": "web",
  "Protocol": "http",
  "Meta": {
    "b": "1",
    "a": "2"
  },
  "CreateIndex": 3,
  "ModifyIndex": 1765000000000000001
}
`
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	agent.wantCalls(t, "GET /v1/config/service-defaults/web")
}

func TestConfigCmdReadNotFound(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{
		"GET /v1/config/service-defaults/nosuch": {status: 404, body: "no config entry service-defaults/nosuch\n"},
	})
	out, _, err := runCLI(t, "config", "read", "--http-addr", agent.addr(), "--kind", "service-defaults", "--name", "nosuch")
	wantErr(t, err, "no config entry service-defaults/nosuch")
	if out != "" {
		t.Errorf("printed %q", out)
	}
}

func TestConfigCmdReadEscapesName(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{"GET /v1/config/service-defaults/web%2Fv2": {body: `{}`}})
	if _, _, err := runCLI(t, "config", "read", "--http-addr", agent.addr(), "--kind", "service-defaults", "--name", "web/v2"); err != nil {
		t.Fatalf("config read: %v", err)
	}
	agent.wantCalls(t, "GET /v1/config/service-defaults/web%2Fv2")
}

func TestConfigCmdList(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{
		"GET /v1/config/service-intentions": {body: `[{"Kind":"service-intentions","Name":"api","Sources":[]},{"Kind":"service-intentions","Name":"db","Sources":[]}]`},
		"GET /v1/config/service-defaults":   {body: `[]`},
	})
	out, _, err := runCLI(t, "config", "list", "--http-addr", agent.addr(), "--kind", "service-intentions")
	if err != nil {
		t.Fatalf("config list: %v", err)
	}
	if want := "api\ndb\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	out, _, err = runCLI(t, "config", "list", "--http-addr", agent.addr(), "--kind", "service-defaults")
	if err != nil || out != "" {
		t.Errorf("empty list: output %q, error %v; want nothing", out, err)
	}
	agent.wantCalls(t, "GET /v1/config/service-intentions", "GET /v1/config/service-defaults")
}

func TestConfigCmdDelete(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		answer   string
		wantCall string
		wantOut  string
		wantErr  []string
	}{
		{name: "plain", answer: "true", wantCall: "DELETE /v1/config/service-defaults/web", wantOut: "Config entry deleted: service-defaults/web\n"},
		{name: "cas", args: []string{"--cas", "--modify-index", "12"}, answer: "true",
			wantCall: "DELETE /v1/config/service-defaults/web?cas=12", wantOut: "Config entry deleted: service-defaults/web\n"},
		{name: "cas failed", args: []string{"--cas", "--modify-index", "12"}, answer: "false",
			wantCall: "DELETE /v1/config/service-defaults/web?cas=12", wantErr: []string{"CAS check failed", "service-defaults/web changed since ModifyIndex 12"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, map[string]reply{"DELETE /v1/config/service-defaults/web": {body: tt.answer}})
			args := append([]string{"config", "delete", "--http-addr", agent.addr(), "--kind", "service-defaults", "--name", "web"}, tt.args...)
			out, _, err := runCLI(t, args...)
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr...)
			} else if err != nil {
				t.Fatalf("config delete: %v", err)
			}
			if out != tt.wantOut {
				t.Errorf("output %q, want %q", out, tt.wantOut)
			}
			agent.wantCalls(t, tt.wantCall)
		})
	}
}

func TestConfigCmdBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"read without kind", []string{"read", "--name", "web"}, []string{"--kind is required"}},
		{"read without both", []string{"read"}, []string{"--kind is required", "--name is required"}},
		{"read with blank name", []string{"read", "--kind", "service-defaults", "--name", " "}, []string{"--name is required"}},
		{"read with an argument", []string{"read", "--kind", "service-defaults", "--name", "web", "extra"}, []string{`shoal config read takes no arguments, got "extra"`}},
		{"list without kind", []string{"list"}, []string{"--kind is required"}},
		{"list with an argument", []string{"list", "service-defaults"}, []string{"takes no arguments"}},
		{"delete without name", []string{"delete", "--kind", "service-defaults"}, []string{"--name is required"}},
		{"delete, cas without index", []string{"delete", "--kind", "service-defaults", "--name", "web", "--cas"}, []string{"--cas needs --modify-index"}},
		{"delete, index without cas", []string{"delete", "--kind", "service-defaults", "--name", "web", "--modify-index", "4"}, []string{"only used with --cas"}},
		{"unknown flag", []string{"read", "--knd", "x"}, []string{"flag provided but not defined: -knd", "shoal config read --help"}},
		{"unknown subcommand", []string{"wrte"}, []string{`unknown command "wrte"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, nil)
			t.Setenv("SHOAL_HTTP_ADDR", agent.addr())
			out, _, err := runCLI(t, append([]string{"config"}, tt.args...)...)
			wantErr(t, err, tt.want...)
			if out != "" {
				t.Errorf("printed %q", out)
			}
			wantNoRequests(t, agent.fakeAgent)
		})
	}
}

func TestConfigCmdClientFlags(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{"GET /v1/config/service-defaults": {body: `[]`}})
	t.Setenv("SHOAL_HTTP_ADDR", agent.addr())
	if _, _, err := runCLI(t, "config", "list", "--token", "s3cret", "--kind", "service-defaults"); err != nil {
		t.Fatalf("config list: %v", err)
	}
	agent.wantCalls(t, "GET /v1/config/service-defaults")
}

func TestConfigCmdCamelKey(t *testing.T) {
	for in, want := range map[string]string{
		"kind":                     "Kind",
		"Kind":                     "Kind",
		"load_balancer":            "LoadBalancer",
		"loadBalancer":             "LoadBalancer",
		"ring_hash_config":         "RingHashConfig",
		"external_sni":             "ExternalSNI",
		"mutual_tls_mode":          "MutualTLSMode",
		"http":                     "HTTP",
		"HTTP":                     "HTTP",
		"local_connect_timeout_ms": "LocalConnectTimeoutMs",
		"source__ip":               "SourceIP",
		"":                         "",
	} {
		if got := camelKey(in); got != want {
			t.Errorf("camelKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConfigCmdTrafficEntries: HCL for the traffic kinds keeps the user's
// names as written (subset names, failover keys, header names) while the
// field names take Consul's case, and lists of one route stay lists.
func TestConfigCmdTrafficEntries(t *testing.T) {
	resolver := `
Kind = "service-resolver"
Name = "web"
default_subset = "v1"
Subsets = {
  v1 = { Filter = "Service.Meta.version == v1" }
  canary-2 = {
    filter = "Service.Meta.version == v2"
    only_passing = true
  }
}
Failover = {
  "*" = { Service = "backup" }
}
load_balancer { policy = "maglev" hash_policies = [{ field = "header", field_value = "x-user" }] }
`
	router := `
Kind = "service-router"
Name = "web"
Routes = [
  {
    Match { HTTP { PathPrefix = "/api/" Header = [{ Name = "x-canary", Exact = "1" }] } }
    Destination {
      ServiceSubset = "canary-2"
      RequestHeaders { Set { x-route = "api" } Remove = ["X-Debug"] }
    }
  }
]
`
	want := map[string]string{
		resolver: `{"DefaultSubset":"v1","Failover":{"*":{"Service":"backup"}},"Kind":"service-resolver",` +
			`"LoadBalancer":{"HashPolicies":[{"Field":"header","FieldValue":"x-user"}],"Policy":"maglev"},"Name":"web",` +
			`"Subsets":{"canary-2":{"Filter":"Service.Meta.version == v2","OnlyPassing":true},"v1":{"Filter":"Service.Meta.version == v1"}}}`,
		router: `{"Kind":"service-router","Name":"web","Routes":[{"Destination":{"RequestHeaders":{"Remove":["X-Debug"],"Set":{"x-route":"api"}},` +
			`"ServiceSubset":"canary-2"},"Match":{"HTTP":{"Header":[{"Exact":"1","Name":"x-canary"}],"PathPrefix":"/api/"}}}]}`,
	}
	for src, w := range want {
		e, err := parseEntry([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(e.body)
		if string(got) != w {
			t.Errorf("parsed\n%s\nwant\n%s", got, w)
		}
	}
}
