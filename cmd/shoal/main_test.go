package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMainReportsOneLine runs main in a child process: the test binary
// itself, re-run with SHOAL_TEST_RUN_MAIN naming the arguments.
func TestMainReportsOneLine(t *testing.T) {
	if args := os.Getenv("SHOAL_TEST_RUN_MAIN"); args != "" {
		os.Args = append([]string{"shoal"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainReportsOneLine$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_RUN_MAIN=members --http-addr "+deadAddr(t))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("main exited with %v, want status 1 (stderr %q)", err, stderr.String())
	}
	if stdout.String() != "" {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
	lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "shoal: ") || !strings.Contains(lines[0], "cannot reach") {
		t.Errorf("stderr %q, want one line \"shoal: ...cannot reach...\"", stderr.String())
	}
}

func TestAppCommands(t *testing.T) {
	have := map[string]bool{}
	for _, c := range newApp().Commands {
		have[c.Name] = true
	}
	for _, name := range []string{"agent", "members", "services", "register", "deregister", "join", "leave", "info", "version"} {
		if !have[name] {
			t.Errorf("no %q command", name)
		}
	}
}

func TestAppNoArgsShowsHelp(t *testing.T) {
	out, _, err := runCLI(t)
	if err != nil {
		t.Fatalf("shoal: %v", err)
	}
	if !strings.Contains(out, "a decentralized service mesh") || !strings.Contains(out, "members") {
		t.Errorf("help does not describe the app:\n%s", out)
	}
}

func TestAppUnknownCommand(t *testing.T) {
	for _, args := range [][]string{{"memebrs"}, {"help", "memebrs"}} {
		_, _, err := runCLI(t, args...)
		// The library's own answer to "help memebrs" is an exit request that
		// would end the test binary; it must come back as an error.
		wantErr(t, err, "memebrs")
	}
}

func TestAppUsageErrorIsOneLine(t *testing.T) {
	out, stderr, err := runCLI(t, "members", "--colour")
	wantErr(t, err, "flag provided but not defined: -colour", `see "shoal members --help"`)
	if out != "" || stderr != "" {
		t.Errorf("usage error printed help: stdout %q, stderr %q", out, stderr)
	}
}

func TestClientCommandsUseEnvAddr(t *testing.T) {
	agent := newFakeAgent(t, map[string]reply{"PUT /v1/agent/leave": {}})
	t.Setenv("SHOAL_HTTP_ADDR", agent.addr())
	if _, _, err := runCLI(t, "leave"); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if got := agent.requests(); len(got) != 1 {
		t.Errorf("agent named by SHOAL_HTTP_ADDR got requests %q, want one", got)
	}
}

func TestClientCommandsUnreachable(t *testing.T) {
	dead := deadAddr(t)
	for _, args := range [][]string{
		{"members"},
		{"services"},
		{"services", "web"},
		{"register", "--name", "web"},
		{"deregister", "web-1"},
		{"join", "10.0.0.12"},
		{"leave"},
		{"info"},
	} {
		t.Run(args[0], func(t *testing.T) {
			full := append([]string{args[0], "--http-addr", dead}, args[1:]...)
			_, _, err := runCLI(t, full...)
			wantErr(t, err, "cannot reach the Shoal agent at "+dead, "connection refused", "SHOAL_HTTP_ADDR")
		})
	}
}

func TestJoinErrors(t *testing.T) {
	a, b := errors.New("a failed"), errors.New("b failed")
	if err := joinErrors(nil); err != nil {
		t.Errorf("joinErrors(nil) = %v", err)
	}
	if err := joinErrors([]error{a}); err != a {
		t.Errorf("joinErrors of one = %v, want it unchanged", err)
	}
	if err := joinErrors([]error{a, b}); err == nil || err.Error() != "a failed; b failed" {
		t.Errorf("joinErrors = %v", err)
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("first\nsecond\n"); got != "first; second" {
		t.Errorf("oneLine = %q", got)
	}
}
