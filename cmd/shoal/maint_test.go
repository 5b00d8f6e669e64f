package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestMaint(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantPath string // "" means no request may be sent
		wantOut  string
		wantErr  string
	}{
		{"service on", []string{"--enable", "--service", "web-1", "--reason", "deploy 42"},
			"/v1/agent/service/maintenance/web-1?enable=true&reason=deploy+42", `maintenance enabled for service "web-1"`, ""},
		{"node off", []string{"--disable"}, "/v1/agent/maintenance?enable=false", "maintenance disabled for the node", ""},
		{"neither", nil, "", "", "exactly one of --enable or --disable"},
		{"both", []string{"--enable", "--disable"}, "", "", "exactly one of --enable or --disable"},
		{"stray arg", []string{"--enable", "web"}, "", "", "no arguments"},
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
			var out, errOut bytes.Buffer
			app := newApp()
			app.Writer, app.ErrWriter = &out, &errOut
			args := append([]string{"shoal", "maint", "--http-addr", srv.Listener.Addr().String()}, tt.args...)
			err := app.Run(args)
			mu.Lock()
			defer mu.Unlock()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				if len(got) != 0 {
					t.Fatalf("sent %v despite bad arguments", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != "PUT "+tt.wantPath {
				t.Fatalf("requests = %v, want [PUT %s]", got, tt.wantPath)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("output %q, want %q", out.String(), tt.wantOut)
			}
		})
	}
}
