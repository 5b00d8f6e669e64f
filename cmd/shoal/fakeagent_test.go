package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// reply is what the fake agent answers to one route.
type reply struct {
	status int // 0 means 200
	body   string
}

// recordedRequest is a request the fake agent received.
type recordedRequest struct {
	Method      string
	Path        string // escaped, as sent
	Body        string
	ContentType string
}

// fakeAgent imitates the HTTP API of "shoal agent": it answers canned
// Consul-shaped bodies by "METHOD /escaped/path" and records every request.
type fakeAgent struct {
	srv    *httptest.Server
	routes map[string]reply

	mu   sync.Mutex // guards reqs
	reqs []recordedRequest
}

func newFakeAgent(t *testing.T, routes map[string]reply) *fakeAgent {
	t.Helper()
	f := &fakeAgent{routes: routes}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, recordedRequest{
		Method:      r.Method,
		Path:        r.URL.EscapedPath(),
		Body:        string(body),
		ContentType: r.Header.Get("Content-Type"),
	})
	f.mu.Unlock()

	rep, ok := f.routes[r.Method+" "+r.URL.EscapedPath()]
	if !ok {
		// The real agent's mux answers an unknown route like this.
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	status := rep.status
	if status == 0 {
		status = http.StatusOK
	}
	if strings.HasPrefix(rep.body, "[") || strings.HasPrefix(rep.body, "{") {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(status)
	io.WriteString(w, rep.body)
}

// addr is the value for --http-addr.
func (f *fakeAgent) addr() string { return f.srv.Listener.Addr().String() }

// requests returns "METHOD /path" of every request received, in order.
func (f *fakeAgent) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.reqs))
	for i, r := range f.reqs {
		out[i] = r.Method + " " + r.Path
	}
	return out
}

// request returns the i-th request received; the test fails if there are
// fewer.
func (f *fakeAgent) request(t *testing.T, i int) recordedRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.reqs) {
		t.Fatalf("agent got %d requests, want at least %d", len(f.reqs), i+1)
	}
	return f.reqs[i]
}

// runCLI runs the app as the shell would run "shoal args...".
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := newApp()
	app.Writer = &out
	app.ErrWriter = &errOut
	err = app.Run(append([]string{"shoal"}, args...))
	return out.String(), errOut.String(), err
}

// deadAddr is an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// wantErr fails the test unless err is non-nil and contains every part.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q is not one line", err)
	}
}

// wantNoRequests fails the test if the agent was asked anything.
func wantNoRequests(t *testing.T, f *fakeAgent) {
	t.Helper()
	if got := f.requests(); len(got) != 0 {
		t.Errorf("agent got requests %q, want none", got)
	}
}
