// Package testutil holds the helpers Shoal's tests share: waiting for a
// condition by polling to a deadline, a log buffer that goroutines write
// while the test reads it, building the module's binaries, picking ports,
// and checking that a component left no goroutine behind.
//
// It lives under testdata/ because it is test support, not product code:
// go test ./... never builds it on its own, only as an import of tests.
package testutil

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// pollEvery is how often Wait looks again.
const pollEvery = 5 * time.Millisecond

// Wait polls cond until it holds and returns how long that took; when
// timeout passes first, the test fails, naming what it waited for.
func Wait(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pollEvery)
	}
	return time.Since(start)
}

// WaitState is Wait for conditions that describe what they saw: polled
// every interval, and on timeout the test fails with cond's last state.
func WaitState(t testing.TB, timeout, every time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(every)
	}
}

// Holds polls cond for the whole window and fails the test the first time
// it does not hold.
func Holds(t testing.TB, window time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !cond() {
			t.Fatalf("%s stopped holding", what)
		}
	}
}

// LogBuffer collects what several goroutines write (an agent's logs, a
// command's output) while the test reads it.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// RaceEnabled reports whether the running test binary was built with
// -race.
func RaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// GoTool returns the go command: on PATH, else the running toolchain's.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// Build builds the package pkg (a path as go build takes it, relative to
// dir; "" dir: the test's package) into out, with extra flags (such as
// -race) and environment, failing the test with go's output when it does
// not build. It returns how long the build took.
func Build(t testing.TB, dir, out, pkg string, env []string, flags ...string) time.Duration {
	t.Helper()
	args := append([]string{"build", "-o", out}, flags...)
	args = append(args, pkg)
	cmd := exec.Command(GoTool(), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	t0 := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return time.Since(t0)
}

// NoLeaks returns a check to run after a component's Shutdown: it fails
// the test if any goroutine is left that did not exist when NoLeaks was
// called (every goroutine must have an owner that stops it). The check
// retries for a few seconds, so that goroutines already on their way out
// (a closing connection) may finish. Tests that use it must not run in
// parallel with others.
func NoLeaks(t testing.TB) func() {
	t.Helper()
	opts := []goleak.Option{goleak.IgnoreCurrent(),
		// fasthttp's server cleans idle workers in a goroutine that sees
		// Stop only after its sleep of MaxIdleWorkerDuration (10 s): owned
		// by the server, gone within that.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	}
	return func() {
		t.Helper()
		var err error
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
			if err = goleak.Find(opts...); err == nil {
				return
			}
		}
		t.Errorf("goroutines left behind: %v", err)
	}
}

// StablePortRange returns [lo, hi): ports below the kernel's ephemeral
// range, or 0, 0 where that range is unknown (not Linux) or leaves too
// little room below it.
func StablePortRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	ephemeralLo, err := strconv.Atoi(f[0])
	if err != nil || ephemeralLo < 12000 {
		return 0, 0
	}
	return 10000, ephemeralLo
}

// FreePort returns a TCP port on 127.0.0.1, free as it returns, for a
// listener that the code under test opens itself. It comes from
// StablePortRange where there is one. A port the kernel picks for :0 lies
// in the ephemeral range, and between its release and the bind any other
// listener on :0 or outgoing connection on the machine may take it (seen:
// a sidecar upstream's port answered, and closed, by another test's
// listener).
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := StablePortRange()
	for range 200 {
		addr := "127.0.0.1:0"
		if hi > lo {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+rand.IntN(hi-lo)))
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		return port
	}
	t.Fatalf("no free port on 127.0.0.1 in %d-%d after 200 tries", lo, hi)
	return 0
}
