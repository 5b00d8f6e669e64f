package main

import (
	"reflect"
	"testing"
)

func TestLeave(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"PUT /v1/agent/leave": {}})
	out, _, err := runCLI(t, "leave", "--http-addr", agent.addr())
	if err != nil {
		t.Fatalf("leave: %v", err)
	}
	if want := "the agent at " + agent.addr() + " is leaving the mesh\n"; out != want {
		t.Errorf("printed %q, want %q", out, want)
	}
	if got, want := agent.requests(), []string{"PUT /v1/agent/leave"}; !reflect.DeepEqual(got, want) {
		t.Errorf("requests %q, want %q", got, want)
	}
}

func TestLeaveBadArgs(t *testing.T) {
	agent := newFakeAgent(t, nil)
	_, _, err := runCLI(t, "leave", "--http-addr", agent.addr(), "now")
	wantErr(t, err, "leave takes no arguments")
	wantNoRequests(t, agent)
}

func TestLeaveAgentError(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"PUT /v1/agent/leave": {status: 500, body: "gossip: leave broadcast timed out\n"},
	})
	out, _, err := runCLI(t, "leave", "--http-addr", agent.addr())
	wantErr(t, err, "leave", "500", "gossip: leave broadcast timed out")
	if out != "" {
		t.Errorf("printed %q after a failure", out)
	}
}
