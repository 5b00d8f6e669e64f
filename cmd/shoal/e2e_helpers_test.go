package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// buildShoal returns a shoal binary in dir, built once per test run (with
// -race when the tests are, so that the agents' own data races fail the
// tests too) and copied for each caller, since a -race build costs tens of
// seconds and each test's dir is removed when that test ends.
func buildShoal(t *testing.T, dir string) string {
	t.Helper()
	sharedBuild.mu.Lock()
	defer sharedBuild.mu.Unlock()
	if sharedBuild.path == "" {
		shared, err := os.MkdirTemp("", "shoal-e2e-bin-")
		if err != nil {
			t.Fatal(err)
		}
		sharedBuild.path = compileShoal(t, shared)
	}
	// Each test gets its own copy in its own dir, so that removing one
	// test's dir never pulls the binary from under another.
	bin := filepath.Join(dir, "shoal")
	if err := copyFile(sharedBuild.path, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// sharedBuild is the one build of a test run, in the system's temp dir
// until TestMain removes it.
var sharedBuild struct {
	mu   sync.Mutex
	path string
}

func compileShoal(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "shoal")
	var flags []string
	if testutil.RaceEnabled() {
		flags = append(flags, "-race")
	}
	took := testutil.Build(t, "", bin, ".", nil, flags...)
	t.Logf("built %s in %v", bin, took.Round(time.Millisecond))
	return bin
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// childEnv is the environment of the shoal processes. A -race binary
// sleeps a second at exit by default (GORACE atexit_sleep_ms), which would
// make every CLI call in a polling loop take a second; GORACE options the
// user set still win, being parsed later.
func childEnv() []string {
	return append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
}

// agentPorts are the loopback ports of one agent: gossip (UDP and TCP),
// gossip+1 (the catalog listener's default), the HTTP API and the HTTP
// proxy.
type agentPorts struct {
	gossip, http, proxy int
}

// freePorts picks ports for n agents. Every port is held open until all are
// chosen, so no two agents get the same one; a gossip port is only taken
// when UDP, TCP and the catalog port above it are all free.
//
// Ports come from below the kernel's ephemeral range where it can tell: an
// agent that is restarted must bind its ports again, and a port inside the
// ephemeral range may meanwhile have become the source port of any outgoing
// connection on the machine (seen: a restarted agent's gossip port taken).
func freePorts(t *testing.T, n int) []agentPorts {
	t.Helper()
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	lo, hi := testutil.StablePortRange()
	listen := func() (int, error) {
		addr := "127.0.0.1:0"
		if hi > lo {
			// hi-1: the gossip port needs the one above it too.
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+mathrand.IntN(hi-1-lo)))
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 0, err
		}
		held = append(held, ln)
		return ln.Addr().(*net.TCPAddr).Port, nil
	}
	// pick returns a port whose TCP and, if udp, UDP and the TCP port
	// above it are free, all held.
	pick := func(gossip bool) int {
		for attempt := 0; attempt < 200; attempt++ {
			p, err := listen()
			if err != nil {
				continue
			}
			if !gossip {
				return p
			}
			udp, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				continue
			}
			held = append(held, udp)
			rpc, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
			if err != nil {
				continue
			}
			held = append(held, rpc)
			return p
		}
		t.Fatalf("no free port on 127.0.0.1 in %d-%d after 200 tries", lo, hi)
		return 0
	}
	out := make([]agentPorts, n)
	for i := range out {
		out[i] = agentPorts{gossip: pick(true), http: pick(false), proxy: pick(false)}
	}
	return out
}

// agentProc is one "shoal agent" process. Its stdout and stderr go to a log
// file, kept across restarts, whose tail is printed if the test fails.
type agentProc struct {
	t          *testing.T
	bin        string
	name       string
	dataDir    string
	gossipAddr string
	httpAddr   string
	proxyAddr  string
	join       []string
	logPath    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
	err  error         // cmd.Wait's result, valid once done is closed
}

// newAgent prepares an agent named name on ports, joining the given gossip
// addresses; Start runs it.
func newAgent(t *testing.T, bin, name string, ports agentPorts, join ...string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{
		t:          t,
		bin:        bin,
		name:       name,
		dataDir:    filepath.Join(dir, "data"),
		gossipAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.gossip)),
		httpAddr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.http)),
		proxyAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.proxy)),
		join:       join,
		logPath:    filepath.Join(dir, name+".log"),
	}
	t.Cleanup(func() {
		a.kill()
		if t.Failed() {
			t.Logf("--- last lines of %s's log (%s):\n%s", a.name, a.logPath, tailFile(a.logPath, 40))
		}
	})
	return a
}

// start runs the agent process: --dev for fast loopback timers, with a data
// dir so that its state survives a restart.
func (a *agentProc) start() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done != nil {
		select {
		case <-a.done:
		default:
			a.t.Fatalf("%s: start while still running", a.name)
		}
	}
	// DNS takes an ephemeral port: these tests only need it out of the way.
	args := []string{"agent", "--dev", "--node", a.name, "--bind", a.gossipAddr,
		"--http-addr", a.httpAddr, "--proxy-addr", a.proxyAddr, "--dns-addr", "127.0.0.1:0", "--data-dir", a.dataDir}
	for _, j := range a.join {
		args = append(args, "--join", j)
	}
	logFile, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	defer logFile.Close() // the child has its own copy
	fmt.Fprintf(logFile, "=== %s shoal %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(a.bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("%s: start: %v", a.name, err)
	}
	done := make(chan struct{})
	a.cmd, a.done = cmd, done
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		a.err = err
		a.mu.Unlock()
		close(done)
	}()
}

// signal sends sig to the running process.
func (a *agentProc) signal(sig os.Signal) {
	a.t.Helper()
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		a.t.Fatalf("%s: signal %v: %v", a.name, sig, err)
	}
}

// waitExit waits up to timeout for the process to exit and returns its exit
// code (-1 when killed by a signal).
func (a *agentProc) waitExit(timeout time.Duration) int {
	a.t.Helper()
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		a.t.Fatalf("%s: still running %v after it was told to stop", a.name, timeout)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var exitErr *exec.ExitError
	switch {
	case a.err == nil:
		return 0
	case errors.As(a.err, &exitErr):
		return exitErr.ExitCode()
	default:
		a.t.Fatalf("%s: wait: %v", a.name, a.err)
		return -1
	}
}

// kill stops the process, if it runs, with SIGKILL and waits for it.
func (a *agentProc) kill() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Kill()
	<-done
}

// tailFile returns the last n lines of the file at path.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cliResult is the outcome of one run of a shoal client command.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runShoal runs "shoal args..." to completion (at most 20 s).
func runShoal(t *testing.T, bin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("shoal %s: no exit within 20s", strings.Join(args, " "))
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("shoal %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// cliJSON runs a client command with --format json and decodes its output.
// It returns false, with the reason, when the command failed.
func cliJSON(t *testing.T, bin string, out any, args ...string) (bool, string) {
	t.Helper()
	res := runShoal(t, bin, append(args, "--format", "json")...)
	if res.code != 0 {
		return false, fmt.Sprintf("shoal %s: exit %d: %s", strings.Join(args, " "), res.code, strings.TrimSpace(res.stderr))
	}
	if err := json.Unmarshal([]byte(res.stdout), out); err != nil {
		t.Fatalf("shoal %s --format json: %v\n%s", strings.Join(args, " "), err, res.stdout)
	}
	return true, ""
}

// memberStatuses returns the agent's view of the cluster, "shoal members
// --format json", as node name → status.
func memberStatuses(t *testing.T, bin string, a *agentProc) (map[string]string, string) {
	t.Helper()
	var members []struct{ Name, Address, Status string }
	if ok, why := cliJSON(t, bin, &members, "members", "--http-addr", a.httpAddr); !ok {
		return nil, why
	}
	out := make(map[string]string, len(members))
	for _, m := range members {
		out[m.Name] = m.Status
	}
	return out, fmt.Sprint(out)
}

// instanceHealth returns "shoal services --format json" on the agent as
// instance ID → health.
func instanceHealth(t *testing.T, bin string, a *agentProc) (map[string]string, string) {
	t.Helper()
	var views []struct{ ID, Node, Health string }
	if ok, why := cliJSON(t, bin, &views, "services", "--http-addr", a.httpAddr); !ok {
		return nil, why
	}
	out := make(map[string]string, len(views))
	for _, v := range views {
		out[v.ID] = v.Health
	}
	return out, fmt.Sprint(out)
}

// httpGetJSON decodes the answer to GET path on the agent's HTTP API.
func httpGetJSON(a *agentProc, path string, out any) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + a.httpAddr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// passingIDs returns the IDs of the instances of service name that
// /v1/health/service/NAME?passing answers on the agent.
func passingIDs(a *agentProc, name string) (map[string]bool, error) {
	var entries []struct{ Service struct{ ID string } }
	if err := httpGetJSON(a, "/v1/health/service/"+name+"?passing", &entries); err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(entries))
	for _, e := range entries {
		ids[e.Service.ID] = true
	}
	return ids, nil
}

// waitMembers waits until every agent in on sees exactly the statuses in want.
func waitMembers(t *testing.T, bin string, timeout time.Duration, want map[string]string, on ...*agentProc) {
	t.Helper()
	for _, a := range on {
		testutil.WaitState(t, timeout, 100*time.Millisecond, fmt.Sprintf("%s to see members %v", a.name, want), func() (bool, string) {
			got, state := memberStatuses(t, bin, a)
			if got == nil || len(got) != len(want) {
				return false, state
			}
			for name, status := range want {
				if got[name] != status {
					return false, state
				}
			}
			return true, state
		})
	}
}

// isOneLine reports whether s, the stderr of a failed command, is exactly one
// non-empty line.
func isOneLine(s string) bool {
	s = strings.TrimSuffix(s, "\n")
	return s != "" && !strings.Contains(s, "\n")
}

// TestMain removes the shared build when the run ends.
func TestMain(m *testing.M) {
	code := m.Run()
	if sharedBuild.path != "" {
		os.RemoveAll(filepath.Dir(sharedBuild.path))
	}
	os.Exit(code)
}
