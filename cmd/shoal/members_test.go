package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

// membersBody is /v1/agent/members as the agent answers it: Consul's
// AgentMember, with Shoal's gossip tags, deliberately unsorted.
const membersBody = `[
  {"Name":"web-2","Addr":"10.0.0.12","Port":7946,"Tags":{"dc":"dc1","id":"7b1f0c52-1c1a-4b7e-9c57-3d1c2f9b8a10","rpc":"10.0.0.12:7947","version":"12"},"Status":4,"ProtocolMin":1,"ProtocolMax":5,"ProtocolCur":2,"DelegateMin":2,"DelegateMax":5,"DelegateCur":4},
  {"Name":"db-1","Addr":"10.0.0.21","Port":7946,"Tags":{"dc":"dc2","id":"0d5e8a41-5f0e-4a4c-8d3a-5c0b9e1f2a33","rpc":"10.0.0.21:7947","version":"3"},"Status":1,"ProtocolMin":1,"ProtocolMax":5,"ProtocolCur":2,"DelegateMin":2,"DelegateMax":5,"DelegateCur":4},
  {"Name":"web-1","Addr":"fd00::11","Port":7946,"Tags":{"dc":"dc1","id":"c3a9d7e2-0b4f-4f61-a0d8-8e2b7c6d5f44","rpc":"[fd00::11]:7947","version":"7"},"Status":2,"ProtocolMin":1,"ProtocolMax":5,"ProtocolCur":2,"DelegateMin":2,"DelegateMax":5,"DelegateCur":4},
  {"Name":"cache-1","Addr":"10.0.0.31","Port":7946,"Tags":null,"Status":3,"ProtocolMin":1,"ProtocolMax":5,"ProtocolCur":2,"DelegateMin":2,"DelegateMax":5,"DelegateCur":4}
]`

func TestMembers(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "table sorted by name with the dc tag",
			want: "" +
				"Node     Address          Status   DC\n" +
				"cache-1  10.0.0.31:7946   left     \n" +
				"db-1     10.0.0.21:7946   alive    dc2\n" +
				"web-1    [fd00::11]:7946  leaving  dc1\n" +
				"web-2    10.0.0.12:7946   failed   dc1\n",
		},
		{
			name: "detailed shows every tag sorted by key",
			args: []string{"--detailed", "--status", "alive"},
			want: "" +
				"Node  Address         Status  Tags\n" +
				"db-1  10.0.0.21:7946  alive   dc=dc2,id=0d5e8a41-5f0e-4a4c-8d3a-5c0b9e1f2a33,rpc=10.0.0.21:7947,version=3\n",
		},
		{
			name: "status regex is anchored and may alternate",
			args: []string{"--status", "alive|fail"},
			want: "" +
				"Node  Address         Status  DC\n" +
				"db-1  10.0.0.21:7946  alive   dc2\n",
		},
		{
			name: "status regex alternation",
			args: []string{"--status", "alive|failed"},
			want: "" +
				"Node   Address         Status  DC\n" +
				"db-1   10.0.0.21:7946  alive   dc2\n" +
				"web-2  10.0.0.12:7946  failed  dc1\n",
		},
		{
			name: "no member matches",
			args: []string{"--status", "none"},
			want: "Node  Address  Status  DC\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/members": {body: membersBody}})
			args := append([]string{"members", "--http-addr", agent.addr()}, tt.args...)
			out, _, err := runCLI(t, args...)
			if err != nil {
				t.Fatalf("members: %v", err)
			}
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
			if got, want := agent.requests(), []string{"GET /v1/agent/members"}; !reflect.DeepEqual(got, want) {
				t.Errorf("requests %q, want %q", got, want)
			}
		})
	}
}

func TestMembersJSON(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/members": {body: membersBody}})
	out, _, err := runCLI(t, "members", "--http-addr", agent.addr(), "--format", "json", "--status", "alive|left")
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	want := []map[string]any{
		{"Name": "cache-1", "Address": "10.0.0.31:7946", "Status": "left", "Tags": map[string]any{}},
		{"Name": "db-1", "Address": "10.0.0.21:7946", "Status": "alive", "Tags": map[string]any{
			"dc": "dc2", "id": "0d5e8a41-5f0e-4a4c-8d3a-5c0b9e1f2a33", "rpc": "10.0.0.21:7947", "version": "3",
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

func TestMembersJSONEmpty(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/members": {body: "[]"}})
	out, _, err := runCLI(t, "members", "--http-addr", agent.addr(), "--format", "json")
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	if out != "[]\n" {
		t.Errorf("output %q, want an empty JSON array", out)
	}
}

func TestMembersBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"invalid regex", []string{"--status", "ali(ve"}, "invalid --status"},
		{"unknown format", []string{"--format", "yaml"}, `invalid --format "yaml"`},
		{"argument", []string{"web-1"}, "members takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/members": {body: membersBody}})
			_, _, err := runCLI(t, append([]string{"members", "--http-addr", agent.addr()}, tt.args...)...)
			wantErr(t, err, tt.want)
			wantNoRequests(t, agent)
		})
	}
}

func TestMembersAgentError(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"GET /v1/agent/members": {status: 500, body: "gossip: cluster is shutting down\n"},
	})
	_, _, err := runCLI(t, "members", "--http-addr", agent.addr())
	wantErr(t, err, "500", "gossip: cluster is shutting down")
}

func TestMemberStatus(t *testing.T) {
	for in, want := range map[int]string{0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed", 9: "unknown(9)"} {
		if got := memberStatus(in); got != want {
			t.Errorf("memberStatus(%d) = %q, want %q", in, got, want)
		}
	}
}
