package main

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
)

func TestForceLeave(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantURI string
		wantOut string
	}{
		{"plain", []string{"n2"}, "/v1/agent/force-leave/n2", "node \"n2\" left\n"},
		{"prune", []string{"--prune", "n2"}, "/v1/agent/force-leave/n2?prune", "node \"n2\" left and was pruned\n"},
		{"escaped", []string{"a b"}, "/v1/agent/force-leave/a%20b", "node \"a b\" left\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = append(got, r.Method+" "+r.URL.RequestURI())
				mu.Unlock()
			}))
			defer srv.Close()
			out, _, err := runCLI(t, append([]string{"force-leave", "--http-addr", srv.Listener.Addr().String()}, tt.args...)...)
			if err != nil {
				t.Fatalf("force-leave: %v", err)
			}
			if out != tt.wantOut {
				t.Errorf("printed %q, want %q", out, tt.wantOut)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := []string{"PUT " + tt.wantURI}; !reflect.DeepEqual(got, want) {
				t.Errorf("requests %q, want %q", got, want)
			}
		})
	}
}

func TestForceLeaveBadArgs(t *testing.T) {
	agent := newFakeAgent(t, nil)
	for _, args := range [][]string{nil, {"n1", "n2"}, {""}} {
		_, _, err := runCLI(t, append([]string{"force-leave", "--http-addr", agent.addr()}, args...)...)
		wantErr(t, err, "force-leave takes one node name")
	}
	wantNoRequests(t, agent)
}

func TestForceLeaveAgentError(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{
		"PUT /v1/agent/force-leave/n1": {status: 400, body: "node \"n1\" is not failed: force-leave removes failed nodes only\n"},
	})
	out, _, err := runCLI(t, "force-leave", "--http-addr", agent.addr(), "n1")
	wantErr(t, err, "force-leave n1", "400", "is not failed")
	if out != "" {
		t.Errorf("printed %q after a failure", out)
	}
	_, _, err = runCLI(t, "force-leave", "--http-addr", agent.addr(), "nope")
	wantErr(t, err, "force-leave nope", "404")
}
