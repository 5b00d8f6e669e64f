package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const registerRoute = "PUT /v1/agent/service/register"

func TestRegisterFromFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		body    map[string]any
		printed string
	}{
		{
			name: "every flag",
			args: []string{"--name", "web", "--id", "web-1", "--address", "10.0.0.11", "--port", "8080",
				"--tag", "v2", "--tag", "http", "--meta", "version=2.1", "--meta", "owners=a,b=c"},
			body: map[string]any{
				"ID": "web-1", "Name": "web", "Address": "10.0.0.11", "Port": 8080.0,
				"Tags": []any{"v2", "http"},
				"Meta": map[string]any{"version": "2.1", "owners": "a,b=c"},
			},
			printed: "registered service \"web-1\"\n",
		},
		{
			name:    "name only: the agent uses it as the ID",
			args:    []string{"--name", "web"},
			body:    map[string]any{"Name": "web"},
			printed: "registered service \"web\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{registerRoute: {}})
			out, _, err := runCLI(t, append([]string{"register", "--http-addr", agent.addr()}, tt.args...)...)
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if out != tt.printed {
				t.Errorf("printed %q, want %q", out, tt.printed)
			}
			req := agent.request(t, 0)
			if got := req.Method + " " + req.Path; got != registerRoute {
				t.Errorf("request %q, want %q", got, registerRoute)
			}
			if req.ContentType != "application/json" {
				t.Errorf("Content-Type %q, want application/json", req.ContentType)
			}
			var body map[string]any
			if err := json.Unmarshal([]byte(req.Body), &body); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, req.Body)
			}
			if !reflect.DeepEqual(body, tt.body) {
				t.Errorf("body %v, want %v", body, tt.body)
			}
		})
	}
}

// registrationFile is a registration as a user writes it for the API:
// Consul's AgentServiceRegistration, with a check the flags cannot express.
const registrationFile = `{
  "ID": "api-1",
  "Name": "api",
  "Tags": ["v1"],
  "Port": 9090,
  "Meta": {"team": "payments"},
  "Check": {"HTTP": "http://127.0.0.1:9090/health", "Interval": "10s", "Timeout": "1s"}
}
`

func TestRegisterFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.json")
	if err := os.WriteFile(path, []byte(registrationFile), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := newFakeAgent(t, map[string]reply{registerRoute: {}})
	out, _, err := runCLI(t, "register", "--http-addr", agent.addr(), path)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if want := "registered service \"api-1\"\n"; out != want {
		t.Errorf("printed %q, want %q", out, want)
	}
	req := agent.request(t, 0)
	if got := req.Method + " " + req.Path; got != registerRoute {
		t.Errorf("request %q, want %q", got, registerRoute)
	}
	if req.Body != registrationFile {
		t.Errorf("body was not sent as it is:\n%s\nwant:\n%s", req.Body, registrationFile)
	}
}

func TestRegisterBadArgs(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.json", registrationFile)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no name", []string{"--port", "80"}, []string{"--name is required"}},
		{"port zero", []string{"--name", "web", "--port", "0"}, []string{"--port 0 is out of range 1-65535"}},
		{"port too big", []string{"--name", "web", "--port", "65536"}, []string{"--port 65536 is out of range"}},
		{"port not a number", []string{"--name", "web", "--port", "http"}, []string{`invalid value "http" for flag -port`, "shoal register --help"}},
		{"meta without =", []string{"--name", "web", "--meta", "version"}, []string{`--meta "version": want KEY=VALUE`}},
		{"meta without key", []string{"--name", "web", "--meta", "=2"}, []string{"want KEY=VALUE"}},
		{"meta twice", []string{"--name", "web", "--meta", "a=1", "--meta", "a=2"}, []string{`--meta key "a" given twice`}},
		{"empty tag", []string{"--name", "web", "--tag", ""}, []string{"--tag must not be empty"}},
		{"every problem at once", []string{"--port", "0", "--meta", "x"}, []string{"--name is required", "--port 0", `--meta "x"`}},
		{"file and flags", []string{"--name", "web", good}, []string{"--name cannot be used with a file"}},
		{"two files", []string{good, good}, []string{"at most one file"}},
		{"flag after the file", []string{good, "--port", "80"}, []string{"flag --port must come before the arguments"}},
		{"missing file", []string{filepath.Join(dir, "nosuch.json")}, []string{"read registration", "no such file"}},
		{"invalid JSON", []string{file("bad.json", `{"Name": "web",}`)}, []string{"bad.json: not valid JSON"}},
		{"empty file", []string{file("empty.json", "")}, []string{"empty.json: not valid JSON"}},
		{"array", []string{file("array.json", `[{"Name": "web"}]`)}, []string{"want one JSON object", "got array"}},
		{"null", []string{file("null.json", `null`)}, []string{"want one JSON object", "got null"}},
		{"config file wrapper", []string{file("wrapped.json", `{"Service": {"Name": "web", "Port": 80}}`)}, []string{"agent configuration file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{registerRoute: {}})
			out, _, err := runCLI(t, append([]string{"register", "--http-addr", agent.addr()}, tt.args...)...)
			wantErr(t, err, tt.want...)
			wantNoRequests(t, agent)
			if out != "" {
				t.Errorf("printed %q", out)
			}
		})
	}
}

func TestRegisterAgentRejects(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		registerRoute: {status: 400, body: "invalid service: Check: HTTP: must be an absolute http(s) URL\n"},
	})
	out, _, err := runCLI(t, "register", "--http-addr", agent.addr(), "--name", "web")
	wantErr(t, err, `register service "web"`, "400 Bad Request", "invalid service: Check: HTTP: must be an absolute http(s) URL")
	if out != "" {
		t.Errorf("printed %q after a failure", out)
	}
}
