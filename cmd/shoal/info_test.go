package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

// shoalSelfBody is /v1/agent/self as Shoal's agent answers it: Consul's
// shape, with numeric statistics.
const shoalSelfBody = `{"Config":{"Datacenter":"dc1","NodeName":"node-a","NodeID":"7b1f0c52-1c1a-4b7e-9c57-3d1c2f9b8a10","Version":"0.1.0","Server":false,"Revision":"shoal"},"Member":{"Name":"node-a","Addr":"10.0.0.11","Port":7946,"Tags":{"dc":"dc1"},"Status":1,"ProtocolMin":1,"ProtocolMax":5,"ProtocolCur":2,"DelegateMin":2,"DelegateMax":5,"DelegateCur":4},"Meta":{},"Stats":{"catalog":{"version":42,"services":3,"rpc_addr":"10.0.0.11:7947","bytes_out":18230,"bytes_in":9120,"pushes_out":17,"pulls":4}}}`

// consulSelfBody is /v1/agent/self as Consul answers it: string statistics
// in several sections.
const consulSelfBody = `{"Config":{"Datacenter":"dc2","NodeName":"consul-1","NodeID":"0d5e8a41-5f0e-4a4c-8d3a-5c0b9e1f2a33","Revision":"2a61e5d5","Server":true,"Version":"1.18.1"},"DebugConfig":{"Bootstrap":false},"Coord":{"Vec":[0,0],"Error":1.5,"Adjustment":0,"Height":1e-05},"Member":{"Name":"consul-1","Addr":"fd00::21","Port":8301,"Tags":{"dc":"dc2","role":"consul"},"Status":1},"Stats":{"serf_lan":{"members":"3","failed":"0"},"agent":{"check_monitors":"0","services":"2"},"build":{"version":"1.18.1"}},"Meta":{"consul-network-segment":""},"xDS":{"SupportedProxies":{"envoy":["1.28.1"]}}}`

func TestInfo(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{
			name: "shoal",
			body: shoalSelfBody,
			want: "" +
				"Node:        node-a\n" +
				"Datacenter:  dc1\n" +
				"Address:     10.0.0.11:7946\n" +
				"Version:     0.1.0\n" +
				"\n" +
				"catalog:\n" +
				"\tbytes_in = 9120\n" +
				"\tbytes_out = 18230\n" +
				"\tpulls = 4\n" +
				"\tpushes_out = 17\n" +
				"\trpc_addr = 10.0.0.11:7947\n" +
				"\tservices = 3\n" +
				"\tversion = 42\n",
		},
		{
			name: "consul",
			body: consulSelfBody,
			want: "" +
				"Node:        consul-1\n" +
				"Datacenter:  dc2\n" +
				"Address:     [fd00::21]:8301\n" +
				"Version:     1.18.1\n" +
				"\n" +
				"agent:\n" +
				"\tcheck_monitors = 0\n" +
				"\tservices = 2\n" +
				"\n" +
				"build:\n" +
				"\tversion = 1.18.1\n" +
				"\n" +
				"serf_lan:\n" +
				"\tfailed = 0\n" +
				"\tmembers = 3\n",
		},
		{
			name: "no member and no stats",
			body: `{"Config":{"Datacenter":"dc1","NodeName":"node-a"}}`,
			want: "" +
				"Node:        node-a\n" +
				"Datacenter:  dc1\n",
		},
		{
			name: "a statistic outside a section",
			body: `{"Config":{"Datacenter":"dc1","NodeName":"node-a"},"Stats":{"uptime":"3h"}}`,
			want: "" +
				"Node:        node-a\n" +
				"Datacenter:  dc1\n" +
				"\n" +
				"uptime = 3h\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/self": {body: tt.body}})
			out, _, err := runCLI(t, "info", "--http-addr", agent.addr())
			if err != nil {
				t.Fatalf("info: %v", err)
			}
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
			if got, want := agent.requests(), []string{"GET /v1/agent/self"}; !reflect.DeepEqual(got, want) {
				t.Errorf("requests %q, want %q", got, want)
			}
		})
	}
}

func TestInfoJSON(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/self": {body: consulSelfBody}})
	out, _, err := runCLI(t, "info", "--http-addr", agent.addr(), "--format", "json")
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	var got, want any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if err := json.Unmarshal([]byte(consulSelfBody), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("JSON output is not the agent's whole answer:\n%s", out)
	}
	if out[:3] != "{\n " {
		t.Errorf("JSON output is not indented:\n%s", out)
	}
}

func TestInfoBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown format", []string{"--format", "text"}, `invalid --format "text"`},
		{"argument", []string{"node-a"}, "info takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/self": {body: shoalSelfBody}})
			_, _, err := runCLI(t, append([]string{"info", "--http-addr", agent.addr()}, tt.args...)...)
			wantErr(t, err, tt.want)
			wantNoRequests(t, agent)
		})
	}
}

func TestInfoAgentError(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/self": {status: 503, body: "agent is starting\n"}})
	_, _, err := runCLI(t, "info", "--http-addr", agent.addr())
	wantErr(t, err, "503", "agent is starting")
}
