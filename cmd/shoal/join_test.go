package main

import (
	"errors"
	"reflect"
	"syscall"
	"testing"
)

func TestJoin(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"PUT /v1/agent/join/10.0.0.12:7946":      {},
		"PUT /v1/agent/join/%5Bfd00::11%5D:7946": {},
		"PUT /v1/agent/join/seed.internal":       {},
	})
	out, _, err := runCLI(t, "join", "--http-addr", agent.addr(), "10.0.0.12:7946", "[fd00::11]:7946", "seed.internal")
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	want := "joined 10.0.0.12:7946\njoined [fd00::11]:7946\njoined seed.internal\n"
	if out != want {
		t.Errorf("printed %q, want %q", out, want)
	}
	wantReqs := []string{
		"PUT /v1/agent/join/10.0.0.12:7946",
		"PUT /v1/agent/join/%5Bfd00::11%5D:7946",
		"PUT /v1/agent/join/seed.internal",
	}
	if got := agent.requests(); !reflect.DeepEqual(got, wantReqs) {
		t.Errorf("requests %q, want %q", got, wantReqs)
	}
}

func TestJoinPartialFailure(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"PUT /v1/agent/join/10.0.0.12:7946": {status: 500, body: "gossip: join 10.0.0.12:7946: dial tcp 10.0.0.12:7946: i/o timeout\n"},
		"PUT /v1/agent/join/10.0.0.13:7946": {},
	})
	out, _, err := runCLI(t, "join", "--http-addr", agent.addr(), "10.0.0.12:7946", "10.0.0.13:7946")
	wantErr(t, err, "1 of 2 joins failed", "join 10.0.0.12:7946", "500", "i/o timeout")
	if want := "joined 10.0.0.13:7946\n"; out != want {
		t.Errorf("printed %q, want %q: a failed join must not stop the others", out, want)
	}
	if n := len(agent.requests()); n != 2 {
		t.Errorf("agent got %d requests, want 2", n)
	}
}

func TestJoinOneFailure(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"PUT /v1/agent/join/10.0.0.12:7946": {status: 500, body: "gossip: no node answered\n"},
	})
	_, _, err := runCLI(t, "join", "--http-addr", agent.addr(), "10.0.0.12:7946")
	wantErr(t, err, "join 10.0.0.12:7946: agent answered 500 Internal Server Error: gossip: no node answered")
}

func TestJoinUnreachableKeepsCause(t *testing.T) {
	_, _, err := runCLI(t, "join", "--http-addr", deadAddr(t), "10.0.0.12:7946")
	wantErr(t, err, "cannot reach")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v does not wrap ECONNREFUSED", err)
	}
}

func TestJoinBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no address", nil, "at least one address"},
		{"empty address", []string{"10.0.0.12", " "}, "empty address"},
		{"flag after an address", []string{"10.0.0.12", "--http-addr", "x"}, "flag --http-addr must come before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, nil)
			_, _, err := runCLI(t, append([]string{"join", "--http-addr", agent.addr()}, tt.args...)...)
			wantErr(t, err, tt.want)
			wantNoRequests(t, agent)
		})
	}
}
