package main

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

func TestRTT(t *testing.T) {
	as := startInProcAgents(t, 3)
	addr := as[0].HTTPAddr()
	// Coordinates come with probe acks: with the test timers every agent
	// has probed the others within a few rounds.
	var out string
	start := time.Now()
	testutil.WaitState(t, 20*time.Second, 50*time.Millisecond, "an rtt estimate of n2 <-> n3", func() (bool, string) {
		var err error
		out, _, err = runCLI(t, "rtt", "--http-addr", addr, "n2", "n3")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	t.Logf("coordinates available after %v", time.Since(start).Round(time.Millisecond))
	if !regexp.MustCompile(`^Estimated n2 <-> n3 rtt: \d+\.\d{3} ms \(using LAN coordinates\)\n$`).MatchString(out) {
		t.Errorf("rtt output %q", out)
	}

	// One node: from the agent's own node.
	testutil.WaitState(t, 20*time.Second, 50*time.Millisecond, "an rtt estimate of n3 <-> n1", func() (bool, string) {
		var err error
		out, _, err = runCLI(t, "rtt", "--http-addr", addr, "--format", "json", "n3")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	var v rttView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if v.From != "n3" || v.To != "n1" || v.Milliseconds <= 0 || v.Milliseconds > 1000 {
		t.Errorf("rtt json = %+v", v)
	}
	if d, err := time.ParseDuration(v.RTT); err != nil || d <= 0 {
		t.Errorf("RTT %q: %v", v.RTT, err)
	}

	_, _, err := runCLI(t, "rtt", "--http-addr", addr, "n1", "nope")
	wantErr(t, err, `no coordinate for node "nope"`)
}

func TestRTTErrors(t *testing.T) {
	f := newFakeAgent(t, map[string]reply{
		"GET /v1/coordinate/nodes": {body: `[{"Node":"a","Segment":"","Coord":{"Vec":[0,0],"Error":1,"Adjustment":0,"Height":0.001}},
			{"Node":"b","Segment":"","Coord":{"Vec":[0.003,0.004],"Error":1,"Adjustment":0,"Height":0.001}},
			{"Node":"c","Segment":"","Coord":{"Vec":[0,0,0],"Error":1,"Adjustment":0,"Height":0}}]`},
		"GET /v1/agent/self": {body: `{"Config":{"NodeName":"a"}}`},
	})
	out, _, err := runCLI(t, "rtt", "--http-addr", f.addr(), "b")
	if err != nil || out != "Estimated b <-> a rtt: 7.000 ms (using LAN coordinates)\n" {
		t.Errorf("rtt b = %q, %v", out, err)
	}
	_, _, err = runCLI(t, "rtt", "--http-addr", f.addr(), "a", "c")
	wantErr(t, err, "rtt a <-> c", "incompatible")
	_, _, err = runCLI(t, "rtt", "--http-addr", f.addr(), "x", "y")
	wantErr(t, err, `no coordinate for node "x"`, `no coordinate for node "y"`)
	_, _, err = runCLI(t, "rtt")
	wantErr(t, err, "one or two node names")
	_, _, err = runCLI(t, "rtt", "a", "b", "c")
	wantErr(t, err, "one or two node names")
	_, _, err = runCLI(t, "rtt", "--http-addr", deadAddr(t), "a", "b")
	wantErr(t, err, "cannot reach the Shoal agent")
}
