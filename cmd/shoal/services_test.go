package main

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Bodies of /v1/catalog/services and /v1/health/service/:name as the agent
// answers them (Consul's shapes, trimmed of nothing the CLI ignores).
const (
	catalogServicesBody = `{"web":["v2","http"],"db":["primary"]}`

	healthWebBody = `[
  {
    "Node": {"ID":"c3a9d7e2-0b4f-4f61-a0d8-8e2b7c6d5f44","Node":"node-b","Address":"10.0.0.12","Datacenter":"dc1","TaggedAddresses":{"lan":"10.0.0.12"},"Meta":{},"CreateIndex":3,"ModifyIndex":3},
    "Service": {"ID":"web-2","Service":"web","Tags":["v2"],"Meta":{"version":"2.1"},"Port":8080,"Address":"","Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"CreateIndex":7,"ModifyIndex":7},
    "Checks": [
      {"Node":"node-b","CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing","Notes":"","Output":"Agent alive and reachable","ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"","CreateIndex":3,"ModifyIndex":3},
      {"Node":"node-b","CheckID":"service:web-2","Name":"Service 'web' check","Status":"warning","Notes":"","Output":"HTTP GET http://10.0.0.12:8080/health: 429 Too Many Requests","ServiceID":"web-2","ServiceName":"web","ServiceTags":["v2"],"Type":"http","CreateIndex":7,"ModifyIndex":9}
    ]
  },
  {
    "Node": {"ID":"7b1f0c52-1c1a-4b7e-9c57-3d1c2f9b8a10","Node":"node-a","Address":"10.0.0.11","Datacenter":"dc1","TaggedAddresses":{"lan":"10.0.0.11"},"Meta":{},"CreateIndex":2,"ModifyIndex":2},
    "Service": {"ID":"web-1","Service":"web","Tags":["v2","http"],"Meta":{},"Port":8080,"Address":"192.168.5.1","Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"CreateIndex":5,"ModifyIndex":5},
    "Checks": [
      {"Node":"node-a","CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing","Notes":"","Output":"Agent alive and reachable","ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"","CreateIndex":2,"ModifyIndex":2}
    ]
  }
]`

	healthDBBody = `[
  {
    "Node": {"ID":"0d5e8a41-5f0e-4a4c-8d3a-5c0b9e1f2a33","Node":"node-c","Address":"10.0.0.21","Datacenter":"dc1","TaggedAddresses":{"lan":"10.0.0.21"},"Meta":{},"CreateIndex":4,"ModifyIndex":4},
    "Service": {"ID":"db-1","Service":"db","Tags":null,"Meta":null,"Port":5432,"Address":"","Weights":{"Passing":1,"Warning":1},"EnableTagOverride":false,"CreateIndex":6,"ModifyIndex":6},
    "Checks": [
      {"Node":"node-c","CheckID":"serfHealth","Name":"Serf Health Status","Status":"critical","Notes":"","Output":"Agent not live or unreachable","ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"","CreateIndex":4,"ModifyIndex":11},
      {"Node":"node-c","CheckID":"service:db-1","Name":"Service 'db' check","Status":"warning","Notes":"","Output":"","ServiceID":"db-1","ServiceName":"db","ServiceTags":[],"Type":"tcp","CreateIndex":6,"ModifyIndex":8}
    ]
  }
]`
)

func servicesRoutes() map[string]reply {
	return map[string]reply{
		"GET /v1/catalog/services":   {body: catalogServicesBody},
		"GET /v1/health/service/web": {body: healthWebBody},
		"GET /v1/health/service/db":  {body: healthDBBody},
	}
}

func TestServices(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		want     string
		requests []string
	}{
		{
			name: "every service",
			want: "" +
				"Service  ID     Node    Address           Health    Tags\n" +
				"db       db-1   node-c  10.0.0.21:5432    critical  \n" +
				"web      web-1  node-a  192.168.5.1:8080  passing   v2,http\n" +
				"web      web-2  node-b  10.0.0.12:8080    warning   v2\n",
			requests: []string{"GET /v1/catalog/services", "GET /v1/health/service/db", "GET /v1/health/service/web"},
		},
		{
			name: "one service",
			args: []string{"web"},
			want: "" +
				"Service  ID     Node    Address           Health   Tags\n" +
				"web      web-1  node-a  192.168.5.1:8080  passing  v2,http\n" +
				"web      web-2  node-b  10.0.0.12:8080    warning  v2\n",
			requests: []string{"GET /v1/health/service/web"},
		},
		{
			name: "passing only",
			args: []string{"--passing"},
			want: "" +
				"Service  ID     Node    Address           Health   Tags\n" +
				"web      web-1  node-a  192.168.5.1:8080  passing  v2,http\n",
			requests: []string{"GET /v1/catalog/services", "GET /v1/health/service/db", "GET /v1/health/service/web"},
		},
		{
			name:     "nothing passing is not an error",
			args:     []string{"--passing", "db"},
			want:     "Service  ID  Node  Address  Health  Tags\n",
			requests: []string{"GET /v1/health/service/db"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, servicesRoutes())
			out, _, err := runCLI(t, append([]string{"services", "--http-addr", agent.addr()}, tt.args...)...)
			if err != nil {
				t.Fatalf("services: %v", err)
			}
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
			if got := agent.requests(); !reflect.DeepEqual(got, tt.requests) {
				t.Errorf("requests %q, want %q", got, tt.requests)
			}
		})
	}
}

func TestServicesJSON(t *testing.T) {
	agent := newFakeAgent(t, servicesRoutes())
	out, _, err := runCLI(t, "services", "--http-addr", agent.addr(), "--format", "json")
	if err != nil {
		t.Fatalf("services: %v", err)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	want := []map[string]any{
		{"Service": "db", "ID": "db-1", "Node": "node-c", "Address": "10.0.0.21", "Port": 5432.0, "Health": "critical", "Tags": []any{}},
		{"Service": "web", "ID": "web-1", "Node": "node-a", "Address": "192.168.5.1", "Port": 8080.0, "Health": "passing", "Tags": []any{"v2", "http"}},
		{"Service": "web", "ID": "web-2", "Node": "node-b", "Address": "10.0.0.12", "Port": 8080.0, "Health": "warning", "Tags": []any{"v2"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

func TestServicesNameIsEscaped(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"GET /v1/health/service/web%2Fv2": {body: healthWebBody}})
	if _, _, err := runCLI(t, "services", "--http-addr", agent.addr(), "web/v2"); err != nil {
		t.Fatalf("services: %v", err)
	}
	if got, want := agent.requests(), []string{"GET /v1/health/service/web%2Fv2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("requests %q, want %q", got, want)
	}
}

func TestServicesUnknownName(t *testing.T) {
	routes := servicesRoutes()
	routes["GET /v1/health/service/nosuch"] = reply{body: "[]"}
	agent := newFakeAgent(t, routes)
	out, _, err := runCLI(t, "services", "--http-addr", agent.addr(), "nosuch")
	wantErr(t, err, `no service named "nosuch"`)
	if out != "" {
		t.Errorf("printed %q for an unknown service", out)
	}
}

func TestServicesVanishedServiceIsSkipped(t *testing.T) {
	routes := servicesRoutes()
	routes["GET /v1/health/service/db"] = reply{body: "[]"} // deregistered meanwhile
	agent := newFakeAgent(t, routes)
	out, _, err := runCLI(t, "services", "--http-addr", agent.addr())
	if err != nil {
		t.Fatalf("services: %v", err)
	}
	want := "" +
		"Service  ID     Node    Address           Health   Tags\n" +
		"web      web-1  node-a  192.168.5.1:8080  passing  v2,http\n" +
		"web      web-2  node-b  10.0.0.12:8080    warning  v2\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

func TestServicesBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown format", []string{"--format", "xml"}, `invalid --format "xml"`},
		{"two names", []string{"web", "db"}, "at most one service name"},
		{"flag after the name", []string{"web", "--passing"}, "flag --passing must come before the arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, servicesRoutes())
			_, _, err := runCLI(t, append([]string{"services", "--http-addr", agent.addr()}, tt.args...)...)
			wantErr(t, err, tt.want)
			wantNoRequests(t, agent)
		})
	}
}

func TestServicesAgentError(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"GET /v1/catalog/services":   {body: catalogServicesBody},
		"GET /v1/health/service/db":  {body: healthDBBody},
		"GET /v1/health/service/web": {status: 500, body: "catalog: snapshot unavailable\n"},
	})
	_, _, err := runCLI(t, "services", "--http-addr", agent.addr())
	wantErr(t, err, `list instances of "web"`, "500", "catalog: snapshot unavailable")
}

func TestInstanceHealth(t *testing.T) {
	tests := []struct {
		statuses []string
		want     string
	}{
		{nil, "passing"},
		{[]string{"passing"}, "passing"},
		{[]string{"passing", "warning"}, "warning"},
		{[]string{"warning", "critical", "passing"}, "critical"},
		{[]string{"critical", "warning"}, "critical"},
		{[]string{"passing", ""}, "critical"},
		{[]string{"critical", "maintenance"}, "maintenance"},
	}
	for _, tt := range tests {
		var e serviceEntry
		for _, s := range tt.statuses {
			e.Checks = append(e.Checks, entryCheck{CheckID: "service:web-1", Status: s})
		}
		if got := instanceOf(e).Health; got != tt.want {
			t.Errorf("health of checks %q = %q, want %q", tt.statuses, got, tt.want)
		}
	}
}
