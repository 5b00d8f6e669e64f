package main

import (
	"reflect"
	"testing"
)

func TestDeregister(t *testing.T) {
	tests := []struct {
		id   string
		path string
	}{
		{"web-1", "/v1/agent/service/deregister/web-1"},
		{"web/1 blue", "/v1/agent/service/deregister/web%2F1%20blue"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{"PUT " + tt.path: {}})
			out, _, err := runCLI(t, "deregister", "--http-addr", agent.addr(), tt.id)
			if err != nil {
				t.Fatalf("deregister: %v", err)
			}
			if want := "deregistered service \"" + tt.id + "\"\n"; out != want {
				t.Errorf("printed %q, want %q", out, want)
			}
			if got, want := agent.requests(), []string{"PUT " + tt.path}; !reflect.DeepEqual(got, want) {
				t.Errorf("requests %q, want %q", got, want)
			}
			if body := agent.request(t, 0).Body; body != "" {
				t.Errorf("sent body %q, want none", body)
			}
		})
	}
}

func TestDeregisterBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no ID", nil, "exactly one service ID, got 0"},
		{"two IDs", []string{"web-1", "web-2"}, "exactly one service ID, got 2"},
		{"empty ID", []string{""}, "exactly one service ID"},
		{"flag after the ID", []string{"web-1", "--http-addr", "10.0.0.1:8500"}, "flag --http-addr must come before the arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, nil)
			_, _, err := runCLI(t, append([]string{"deregister", "--http-addr", agent.addr()}, tt.args...)...)
			wantErr(t, err, tt.want)
			wantNoRequests(t, agent)
		})
	}
}

func TestDeregisterUnknownID(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"PUT /v1/agent/service/deregister/web-9": {status: 404, body: "unknown service ID \"web-9\"\n"},
	})
	_, _, err := runCLI(t, "deregister", "--http-addr", agent.addr(), "web-9")
	wantErr(t, err, `deregister service "web-9"`, "404", `unknown service ID "web-9"`)
}
