package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// intentionListBody is /v1/connect/intentions as the agent answers it,
// highest precedence first.
const intentionListBody = `[
  {"Description":"web reads db through api","SourceNS":"default","SourceName":"web","DestinationNS":"default","DestinationName":"db","SourceType":"consul","Action":"deny","Precedence":9,"CreateIndex":1765000000000000001,"ModifyIndex":1765000000000000009},
  {"SourceNS":"default","SourceName":"node:web-1","DestinationNS":"default","DestinationName":"db","SourceType":"consul","Action":"allow","Precedence":9,"CreateIndex":4,"ModifyIndex":4},
  {"Description":"default\tdeny,\nsee runbook","SourceNS":"default","SourceName":"*","DestinationNS":"default","DestinationName":"db","SourceType":"consul","Action":"deny","Precedence":8,"CreateIndex":2,"ModifyIndex":2}
]`

func TestIntentionCmdCreate(t *testing.T) {
	const exact = "/v1/connect/intentions/exact"
	tests := []struct {
		name     string
		args     []string
		wantBody string
		wantOut  string
		calls    []string
	}{
		{
			name:     "allow by default",
			args:     []string{"web", "db"},
			wantBody: `{"Action":"allow"}`,
			wantOut:  "Created: web => db (allow)\n",
			calls:    []string{"GET " + exact + "?destination=db&source=web", "PUT " + exact + "?destination=db&source=web"},
		},
		{
			name:     "deny with a description",
			args:     []string{"--deny", "--description", "web reads db through api", "web", "db"},
			wantBody: `{"Action":"deny","Description":"web reads db through api"}`,
			wantOut:  "Created: web => db (deny)\n",
			calls:    []string{"GET " + exact + "?destination=db&source=web", "PUT " + exact + "?destination=db&source=web"},
		},
		{
			name:     "explicit allow, node source",
			args:     []string{"--allow", "node:web-1", "db"},
			wantBody: `{"Action":"allow"}`,
			wantOut:  "Created: node:web-1 => db (allow)\n",
			calls:    []string{"GET " + exact + "?destination=db&source=node%3Aweb-1", "PUT " + exact + "?destination=db&source=node%3Aweb-1"},
		},
		{
			name:     "wildcards",
			args:     []string{"--deny", "*", "*"},
			wantBody: `{"Action":"deny"}`,
			wantOut:  "Created: * => * (deny)\n",
			calls:    []string{"GET " + exact + "?destination=%2A&source=%2A", "PUT " + exact + "?destination=%2A&source=%2A"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, map[string]reply{
				"GET " + exact: {status: 404, body: "no intention\n"},
				"PUT " + exact: {body: "true"},
			})
			out, _, err := runCLI(t, append([]string{"intention", "create", "--http-addr", agent.addr()}, tt.args...)...)
			if err != nil {
				t.Fatalf("intention create: %v", err)
			}
			if out != tt.wantOut {
				t.Errorf("output %q, want %q", out, tt.wantOut)
			}
			agent.wantCalls(t, tt.calls...)
			agent.wantJSONBody(t, 1, tt.wantBody)
		})
	}
}

func TestIntentionCmdCreateExisting(t *testing.T) {
	existing := `{"SourceName":"web","DestinationName":"db","SourceType":"consul","Action":"allow","Precedence":9,"CreateIndex":4,"ModifyIndex":4}`
	routes := map[string]reply{
		"GET /v1/connect/intentions/exact": {body: existing},
		"PUT /v1/connect/intentions/exact": {body: "true"},
	}

	agent := newQueryAgent(t, routes)
	out, _, err := runCLI(t, "intention", "create", "--http-addr", agent.addr(), "--deny", "web", "db")
	wantErr(t, err, "intention web => db exists; use --replace")
	if out != "" {
		t.Errorf("printed %q", out)
	}
	agent.wantCalls(t, "GET /v1/connect/intentions/exact?destination=db&source=web")

	agent = newQueryAgent(t, routes)
	out, _, err = runCLI(t, "intention", "create", "--http-addr", agent.addr(), "--deny", "--replace", "web", "db")
	if err != nil {
		t.Fatalf("intention create --replace: %v", err)
	}
	if want := "Created: web => db (deny)\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	agent.wantCalls(t, "PUT /v1/connect/intentions/exact?destination=db&source=web")
	agent.wantJSONBody(t, 0, `{"Action":"deny"}`)
}

func TestIntentionCmdCreateAgentErrors(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{
		"GET /v1/connect/intentions/exact": {status: 500, body: "config store: not loaded\n"},
	})
	_, _, err := runCLI(t, "intention", "create", "--http-addr", agent.addr(), "web", "db")
	wantErr(t, err, "look up intention web => db", "500", "config store: not loaded")

	agent = newQueryAgent(t, map[string]reply{
		"PUT /v1/connect/intentions/exact": {status: 400, body: "source \"web!\": invalid name\n"},
	})
	_, _, err = runCLI(t, "intention", "create", "--http-addr", agent.addr(), "--replace", "web!", "db")
	wantErr(t, err, "create intention web! => db", "400", "invalid name")
}

func TestIntentionCmdDelete(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{"DELETE /v1/connect/intentions/exact": {body: "true"}})
	out, _, err := runCLI(t, "intention", "delete", "--http-addr", agent.addr(), "node:web-1", "db")
	if err != nil {
		t.Fatalf("intention delete: %v", err)
	}
	if want := "Intention deleted: node:web-1 => db\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	agent.wantCalls(t, "DELETE /v1/connect/intentions/exact?destination=db&source=node%3Aweb-1")
}

func TestIntentionCmdCheck(t *testing.T) {
	tests := []struct {
		name     string
		answer   string
		wantOut  string
		wantCode int // 0: no error
	}{
		{
			name:    "allowed",
			answer:  `{"Allowed":true,"Enforced":true,"Reason":"intention web => db allows"}`,
			wantOut: "Allowed\n",
		},
		{
			name:     "denied",
			answer:   `{"Allowed":false,"Enforced":true,"Reason":"intention web => db denies"}`,
			wantOut:  "Denied\n",
			wantCode: 1,
		},
		{
			name:    "allowed, not enforced",
			answer:  `{"Allowed":true,"Enforced":false,"Reason":"no intention matches: default allow; not enforced: this agent runs without the node PKI (--ca-file), so it cannot verify callers"}`,
			wantOut: "Allowed\nnote: no intention matches: default allow; not enforced: this agent runs without the node PKI (--ca-file), so it cannot verify callers\n",
		},
		{
			name:     "denied, not enforced, no reason",
			answer:   `{"Allowed":false,"Enforced":false}`,
			wantOut:  "Denied\nnote: this agent does not enforce intentions\n",
			wantCode: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, map[string]reply{"GET /v1/connect/intentions/check": {body: tt.answer}})
			out, _, err := runCLI(t, "intention", "check", "--http-addr", agent.addr(), "web", "db")
			if out != tt.wantOut {
				t.Errorf("output %q, want %q", out, tt.wantOut)
			}
			if got := exitCode(err); got != tt.wantCode {
				t.Errorf("exit status %d (error %v), want %d", got, err, tt.wantCode)
			}
			if tt.wantCode != 0 {
				wantErr(t, err, "web => db is denied")
			}
			agent.wantCalls(t, "GET /v1/connect/intentions/check?destination=db&source=web")
		})
	}
}

func TestIntentionCmdCheckAgentError(t *testing.T) {
	// An error is status 1, never the 2 of an answer "Denied".
	agent := newQueryAgent(t, map[string]reply{"GET /v1/connect/intentions/check": {status: 403, body: "Permission denied: token required\n"}})
	out, _, err := runCLI(t, "intention", "check", "--http-addr", agent.addr(), "web", "db")
	wantErr(t, err, "check intention web => db", "403", "token required")
	if got := exitCode(err); got != 1 {
		t.Errorf("exit status %d, want 1", got)
	}
	if out != "" {
		t.Errorf("printed %q", out)
	}
}

// exitCode is the status main exits with for err: 1 for any error.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	return 1
}

func TestIntentionCmdList(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{"GET /v1/connect/intentions": {body: intentionListBody}})
	out, _, err := runCLI(t, "intention", "list", "--http-addr", agent.addr())
	if err != nil {
		t.Fatalf("intention list: %v", err)
	}
	want := "" +
		"Source      Action  Destination  Precedence  Description\n" +
		"web         deny    db           9           web reads db through api\n" +
		"node:web-1  allow   db           9           \n" +
		"*           deny    db           8           default deny, see runbook\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	agent.wantCalls(t, "GET /v1/connect/intentions")
}

func TestIntentionCmdListJSON(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{"GET /v1/connect/intentions": {body: intentionListBody}})
	out, _, err := runCLI(t, "intention", "list", "--http-addr", agent.addr(), "--format", "json")
	if err != nil {
		t.Fatalf("intention list: %v", err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if len(got) != 3 || got[1]["SourceName"] != "node:web-1" || got[0]["Action"] != "deny" || got[2]["Precedence"] != 8.0 {
		t.Errorf("got %v", got)
	}
}

func TestIntentionCmdListEmpty(t *testing.T) {
	agent := newQueryAgent(t, map[string]reply{"GET /v1/connect/intentions": {body: `[]`}})
	out, _, err := runCLI(t, "intention", "list", "--http-addr", agent.addr())
	if err != nil {
		t.Fatalf("intention list: %v", err)
	}
	if want := "Source  Action  Destination  Precedence  Description\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestIntentionCmdBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string // after "intention"
		want []string
	}{
		{"create, no args", []string{"create"}, []string{"shoal intention create takes two arguments, SRC and DST, got 0"}},
		{"create, one arg", []string{"create", "web"}, []string{"got 1"}},
		{"create, three args", []string{"create", "web", "db", "api"}, []string{"got 3"}},
		{"create, flag after args", []string{"create", "web", "db", "--deny"}, []string{"flag --deny must come before the arguments", "shoal intention create --help"}},
		{"create, allow and deny", []string{"create", "--allow", "--deny", "web", "db"}, []string{"--allow and --deny exclude each other"}},
		{"create, empty source", []string{"create", "", "db"}, []string{"empty source name"}},
		{"create, both empty", []string{"create", " ", ""}, []string{"empty source name", "empty destination name"}},
		{"create, node destination", []string{"create", "web", "node:db-1"}, []string{`destination "node:db-1": only a source may be a node`}},
		{"create, node without name", []string{"create", "node:", "db"}, []string{`source "node:": no node name after node:`}},
		{"create, partial wildcard", []string{"create", "web*", "db"}, []string{`source "web*": * must be the whole name`}},
		{"delete, one arg", []string{"delete", "web"}, []string{"shoal intention delete takes two arguments"}},
		{"delete, empty destination", []string{"delete", "web", ""}, []string{"empty destination name"}},
		{"check, no args", []string{"check"}, []string{"shoal intention check takes two arguments"}},
		{"check, node destination", []string{"check", "web", "node:x"}, []string{"only a source may be a node"}},
		{"list, an argument", []string{"list", "web"}, []string{`shoal intention list takes no arguments, got "web"`}},
		{"list, bad format", []string{"list", "--format", "xml"}, []string{`invalid --format "xml"`}},
		{"unknown flag", []string{"create", "--dny", "web", "db"}, []string{"flag provided but not defined: -dny", "shoal intention create --help"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newQueryAgent(t, nil)
			t.Setenv("SHOAL_HTTP_ADDR", agent.addr())
			out, _, err := runCLI(t, append([]string{"intention"}, tt.args...)...)
			wantErr(t, err, tt.want...)
			if code := exitCode(err); code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			if out != "" {
				t.Errorf("printed %q", out)
			}
			wantNoRequests(t, agent.fakeAgent)
		})
	}
}

func TestIntentionCmdGroup(t *testing.T) {
	out, _, err := runCLI(t, "intention")
	if err != nil {
		t.Fatalf("intention: %v", err)
	}
	for _, sub := range []string{"create", "delete", "check", "list"} {
		if !strings.Contains(out, sub) {
			t.Errorf("help of \"shoal intention\" does not list %q:\n%s", sub, out)
		}
	}
	_, _, err = runCLI(t, "intention", "chek", "web", "db")
	wantErr(t, err, `unknown command "chek"`)
}
