package main

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

const (
	// converge bounds how long gossip may take to agree on membership or
	// the catalog; generous for -race on a loaded two-core machine.
	converge = 20 * time.Second
	// detect bounds failure detection of a killed agent (about 5 s with
	// --dev timers).
	detect = 25 * time.Second
	// leaveExit bounds how long an agent takes to leave and exit after
	// SIGTERM.
	leaveExit = 5 * time.Second
)

// TestE2E builds the shoal binary once and runs agents as separate
// processes on 127.0.0.1, driving them with the CLI and the HTTP API as a
// user would. Agents run with --dev (fast loopback timers) and a --data-dir,
// so that their state survives a restart. The scenarios run in parallel.
func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping end-to-end tests in -short mode: they build the shoal binary and run agents as processes")
	}
	bin := buildShoal(t, t.TempDir())
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, bin string)
	}{
		{"ClusterLifecycle", testClusterLifecycle},
		{"JoinRetriesSeed", testJoinRetriesSeed},
		{"Errors", testErrors},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, bin)
		})
	}
}

// testClusterLifecycle runs three agents through registration,
// replication, a crash, a restart from the data dir and a graceful leave.
func testClusterLifecycle(t *testing.T, bin string) {
	begin := time.Now()
	phase := func(what string) { t.Logf("%6.2fs %s", time.Since(begin).Seconds(), what) }
	ports := freePorts(t, 3)
	a1 := newAgent(t, bin, "n1", ports[0])
	a2 := newAgent(t, bin, "n2", ports[1], a1.gossipAddr)
	a3 := newAgent(t, bin, "n3", ports[2], a1.gossipAddr)
	all := []*agentProc{a1, a2, a3}
	for _, a := range all {
		a.start()
	}
	allAlive := map[string]string{"n1": "alive", "n2": "alive", "n3": "alive"}
	waitMembers(t, bin, converge, allAlive, all...)
	phase("converged: 3 alive")

	// Register web-2 on agent 2 over the HTTP API, web-3 on agent 3 with
	// the CLI.
	body := `{"ID":"web-2","Name":"web","Port":8080,"Tags":["v1"]}`
	req, err := http.NewRequest(http.MethodPut, "http://"+a2.httpAddr+"/v1/agent/service/register", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register web-2 on n2: %s", resp.Status)
	}
	if res := runShoal(t, bin, "register", "--http-addr", a3.httpAddr, "--name", "web", "--id", "web-3", "--port", "8081"); res.code != 0 {
		t.Fatalf("shoal register on n3: exit %d: %s", res.code, res.stderr)
	}

	bothPassing := func(a *agentProc) {
		t.Helper()
		testutil.WaitState(t, converge, 100*time.Millisecond, a.name+" to list web-2 and web-3 passing", func() (bool, string) {
			got, state := instanceHealth(t, bin, a)
			return got["web-2"] == "passing" && got["web-3"] == "passing", state
		})
	}
	for _, a := range []*agentProc{a1, a3} {
		bothPassing(a)
	}
	phase("replicated")

	// Crash agent 3: the others see it failed, its instance drops out of
	// ?passing but stays in the catalog as critical.
	a3.signal(syscall.SIGKILL)
	a3.waitExit(5 * time.Second)
	waitMembers(t, bin, detect, map[string]string{"n1": "alive", "n2": "alive", "n3": "failed"}, a1, a2)
	phase("n3 failed")
	for _, a := range []*agentProc{a1, a2} {
		testutil.WaitState(t, converge, 100*time.Millisecond, a.name+" to drop web-3 from ?passing", func() (bool, string) {
			ids, err := passingIDs(a, "web")
			if err != nil {
				return false, err.Error()
			}
			return ids["web-2"] && !ids["web-3"], fmt.Sprint(ids)
		})
	}
	phase("web-3 out of ?passing")
	if got, state := instanceHealth(t, bin, a1); got["web-3"] != "critical" {
		t.Errorf("n1: web-3 of the failed node: want critical in the catalog, got %s", state)
	}

	// Restart agent 3 from its data dir: it is alive everywhere again and
	// its service is back and passing, with nobody registering it again.
	a3.start()
	waitMembers(t, bin, converge, allAlive, all...)
	phase("n3 alive again")
	for _, a := range all {
		testutil.WaitState(t, converge, 100*time.Millisecond, a.name+" to list web-2 and web-3 in ?passing", func() (bool, string) {
			ids, err := passingIDs(a, "web")
			if err != nil {
				return false, err.Error()
			}
			return ids["web-2"] && ids["web-3"], fmt.Sprint(ids)
		})
	}
	phase("web-3 back in ?passing")
	var own map[string]struct{ ID string }
	if err := httpGetJSON(a3, "/v1/agent/services", &own); err != nil {
		t.Fatal(err)
	}
	if _, ok := own["web-3"]; !ok || len(own) != 1 {
		t.Errorf("n3 after restart: /v1/agent/services = %v, want web-3 only", own)
	}

	// SIGTERM agent 2: it leaves gracefully and exits 0; the others see it
	// left, never failed, and its instance is removed.
	a2.signal(syscall.SIGTERM)
	t0 := time.Now()
	if code := a2.waitExit(leaveExit); code != 0 {
		t.Errorf("n2 exited %d after SIGTERM, want 0", code)
	}
	t.Logf("n2 left and exited %v after SIGTERM", time.Since(t0).Round(time.Millisecond))
	for _, a := range []*agentProc{a1, a3} {
		testutil.WaitState(t, converge, 100*time.Millisecond, a.name+" to see n2 left", func() (bool, string) {
			got, state := memberStatuses(t, bin, a)
			if got["n2"] == "failed" {
				t.Fatalf("%s sees n2 failed after a graceful leave: %s", a.name, state)
			}
			return got["n2"] == "left" && got["n1"] == "alive" && got["n3"] == "alive", state
		})
		testutil.WaitState(t, converge, 100*time.Millisecond, a.name+" to remove web-2", func() (bool, string) {
			got, state := instanceHealth(t, bin, a)
			_, has2 := got["web-2"]
			return !has2 && got["web-3"] == "passing", state
		})
	}
	phase("n2 left, web-2 removed")
}

// testJoinRetriesSeed starts an agent whose seed is not up yet: it runs
// alone, keeps retrying, and joins once the seed starts.
func testJoinRetriesSeed(t *testing.T, bin string) {
	ports := freePorts(t, 2)
	a1 := newAgent(t, bin, "seed", ports[0])
	a2 := newAgent(t, bin, "joiner", ports[1], a1.gossipAddr)
	a2.start()
	waitMembers(t, bin, converge, map[string]string{"joiner": "alive"}, a2)
	// The agent says so once when its seeds do not answer.
	testutil.WaitState(t, converge, 100*time.Millisecond, "joiner to log a failed join", func() (bool, string) {
		return strings.Contains(tailFile(a2.logPath, 100), "join failed, retrying"), "no such line in " + a2.logPath
	})

	a1.start()
	waitMembers(t, bin, converge, map[string]string{"seed": "alive", "joiner": "alive"}, a1, a2)
}

// testErrors checks that the failures a user meets first are reported at
// once, as one line on stderr, with a non-zero exit status.
func testErrors(t *testing.T, bin string) {
	ports := freePorts(t, 1)
	gossip := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0].gossip))

	// oneLineFailure runs shoal and checks it fails quickly with one line
	// on stderr that contains want.
	oneLineFailure := func(t *testing.T, want string, args ...string) {
		t.Helper()
		t0 := time.Now()
		res := runShoal(t, bin, args...)
		took := time.Since(t0)
		if res.code == 0 {
			t.Errorf("shoal %s: exit 0, want a failure", strings.Join(args, " "))
		}
		if !isOneLine(res.stderr) || !strings.Contains(res.stderr, want) {
			t.Errorf("shoal %s: stderr %q, want one line containing %q", strings.Join(args, " "), res.stderr, want)
		}
		if took > 10*time.Second {
			t.Errorf("shoal %s: took %v to fail, want at once", strings.Join(args, " "), took)
		}
	}

	t.Run("HTTPAddressInUse", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		proxy := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0].proxy))
		oneLineFailure(t, "address already in use", "agent", "--dev", "--node", "busy", "--bind", gossip,
			"--http-addr", ln.Addr().String(), "--proxy-addr", proxy, "--dns-addr", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "data"))
	})
	t.Run("BadFlag", func(t *testing.T) {
		oneLineFailure(t, "no-such-flag", "agent", "--dev", "--no-such-flag")
	})
	t.Run("AgentUnreachable", func(t *testing.T) {
		// Nothing listens on the free HTTP port picked above.
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0].http))
		oneLineFailure(t, addr, "members", "--http-addr", addr)
	})
	t.Run("DataDirRequired", func(t *testing.T) {
		oneLineFailure(t, "--data-dir", "agent", "--node", "nodir", "--bind", gossip)
	})
}
