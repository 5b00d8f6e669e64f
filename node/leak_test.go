package node

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// TestAgentShutdownLeavesNoGoroutine runs three agents with everything on
// (data dirs, HTTP API, proxy, DNS, health checks, pushes between them),
// shuts them down and checks that every goroutine they started is gone:
// each has an owner that stops it.
func TestAgentShutdownLeavesNoGoroutine(t *testing.T) {
	check := testutil.NoLeaks(t)
	as := startAgentsWith(t, 3, func(_ int, c *Config) { c.DataDir = t.TempDir() })
	backend := http.Server{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	for i, a := range as {
		register(t, a, fmt.Sprintf(`{"Name":"web","ID":"web-%d","Port":%d,"Check":{"HTTP":"http://%s/","Interval":"100ms"}}`,
			i, ln.Addr().(*net.TCPAddr).Port, ln.Addr()))
	}
	testutil.Wait(t, 15*time.Second, "three passing instances everywhere", func() bool {
		for _, a := range as {
			if len(healthEntries(t, a, "web", "?passing")) != 3 {
				return false
			}
		}
		return true
	})
	for _, a := range as {
		if err := a.Leave(); err != nil {
			t.Fatal(err)
		}
		if err := a.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	backend.Close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	check()
}
