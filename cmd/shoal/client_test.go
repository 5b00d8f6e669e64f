package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
)

func TestClientBaseURL(t *testing.T) {
	tests := []struct {
		addr, want, err string
	}{
		{addr: "127.0.0.1:8500", want: "http://127.0.0.1:8500"},
		{addr: "[::1]:8500", want: "http://[::1]:8500"},
		{addr: "http://agent.internal:8500", want: "http://agent.internal:8500"},
		{addr: "https://agent.internal:8501/", want: "https://agent.internal:8501"},
		{addr: "", err: "no agent address"},
		{addr: "ftp://agent:21", err: "invalid agent address"},
		{addr: "http://", err: "invalid agent address"},
		{addr: "agent:8500/v1", err: "invalid agent address"},
	}
	for _, tt := range tests {
		a := &apiClient{addr: tt.addr}
		got, err := a.baseURL()
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("baseURL(%q) = %q, %v; want error %q", tt.addr, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

func TestClientInvalidAddrSendsNothing(t *testing.T) {
	_, _, err := runCLI(t, "members", "--http-addr", "ftp://127.0.0.1:8500")
	wantErr(t, err, `invalid agent address "ftp://127.0.0.1:8500"`)
}

func TestClientStatusError(t *testing.T) {
	tests := []struct {
		name string
		rep  reply
		want string
	}{
		{"reason", reply{status: 400, body: "invalid service: Name: required\n"}, "agent answered 400 Bad Request: invalid service: Name: required"},
		{"first line only", reply{status: 500, body: "\nfirst problem\nsecond problem\n"}, "agent answered 500 Internal Server Error: first problem"},
		{"no body", reply{status: 403}, "agent answered 403 Forbidden"},
		{"long body is cut", reply{status: 502, body: strings.Repeat("x", 300)}, strings.Repeat("x", maxReasonLen) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/self": tt.rep})
			a := &apiClient{addr: agent.addr(), http: http.DefaultClient}
			err := a.get(context.Background(), "/v1/agent/self", new(any))
			var se *statusError
			if !errors.As(err, &se) || se.code != tt.rep.status {
				t.Fatalf("got %v, want a statusError with code %d", err, tt.rep.status)
			}
			if !strings.HasSuffix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q, want one line ending in %q", err, tt.want)
			}
		})
	}
}

func TestClientBadJSON(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"GET /v1/agent/members": {body: "<html>proxy</html>"}})
	_, _, err := runCLI(t, "members", "--http-addr", agent.addr())
	wantErr(t, err, "decode answer to GET /v1/agent/members")
}

func TestClientUnreachable(t *testing.T) {
	dead := deadAddr(t)
	a := &apiClient{addr: dead, http: &http.Client{Timeout: requestTimeout}}
	err := a.put(context.Background(), "/v1/agent/leave", nil, nil)
	want := `cannot reach the Shoal agent at ` + dead + `: connection refused (is "shoal agent" running? set --http-addr or SHOAL_HTTP_ADDR)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error does not wrap its cause")
	}
}

func TestUnreachableCause(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&url.Error{Op: "Get", URL: "http://10.0.0.1:8500/v1/agent/self", Err: context.DeadlineExceeded}, "no answer within 10s"},
		{&url.Error{Op: "Get", URL: "http://10.0.0.1:8500/v1/agent/self", Err: errors.New("EOF")}, "EOF"},
	}
	for _, tt := range tests {
		e := &unreachableError{addr: "10.0.0.1:8500", err: tt.err}
		if got := e.cause(); got != tt.want {
			t.Errorf("cause of %v = %q, want %q", tt.err, got, tt.want)
		}
	}
}
