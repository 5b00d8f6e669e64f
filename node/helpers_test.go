package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// startAgent starts an in-process agent with the test profile; cfg may
// adjust the configuration first.
func startAgent(t *testing.T, name string, adjust func(*Config)) *Agent {
	t.Helper()
	cfg := TestConfig(name)
	if adjust != nil {
		adjust(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	return a
}

// steadyMembership puts an agent's failure detection on LAN timers and its
// tags on the production pace. The test profile's 100 ms probe timeouts
// detect failures in about a second, and can see a false one on a loaded
// two-core machine under -race (a headless browser, a parallel package);
// tests about something else that want every member alive throughout use
// this. A real failure still shows: it lasts.
func steadyMembership(c *Config) {
	lan := gossip.LANTiming()
	c.Gossip.Timing.ProbeInterval, c.Gossip.Timing.ProbeTimeout = lan.ProbeInterval, lan.ProbeTimeout
	c.Gossip.Timing.SuspicionMult = lan.SuspicionMult
	c.Gossip.TagInterval = gossip.DefaultConfig().TagInterval
}

// startAgents starts n agents joined through the first and waits until every
// one sees n alive members.
func startAgents(t *testing.T, n int) []*Agent {
	t.Helper()
	return startAgentsWith(t, n, nil)
}

// startAgentsWith is startAgents with a per-agent adjustment of the
// configuration (agent i is named "n<i>").
func startAgentsWith(t *testing.T, n int, adjust func(i int, c *Config)) []*Agent {
	t.Helper()
	var as []*Agent
	for i := range n {
		as = append(as, startAgent(t, fmt.Sprintf("n%d", i), func(c *Config) {
			if i > 0 {
				c.Join = []string{as[0].Cluster().LocalMember().GossipAddr()}
			}
			if adjust != nil {
				adjust(i, c)
			}
		}))
	}
	testutil.Wait(t, 15*time.Second, "all agents alive everywhere", func() bool {
		for _, a := range as {
			alive := 0
			for _, m := range a.Cluster().Catalog().Members() {
				if m.Status.String() == "alive" {
					alive++
				}
			}
			if alive != n {
				return false
			}
		}
		return true
	})
	return as
}

// do sends a request to an agent's HTTP API and returns status and body.
func do(t *testing.T, a *Agent, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, "http://"+a.HTTPAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// healthEntries reads /v1/health/service/NAME from an agent.
func healthEntries(t *testing.T, a *Agent, name, query string) []ServiceEntry {
	t.Helper()
	code, body := do(t, a, "GET", "/v1/health/service/"+name+query, nil)
	if code != http.StatusOK {
		t.Fatalf("health/service/%s: %d %s", name, code, body)
	}
	var out []ServiceEntry
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// mustUnmarshal decodes JSON or fails the test.
func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}
