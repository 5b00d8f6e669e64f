package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/node/pki"
)

// tlsCA runs "shoal tls ca create" in a new directory and returns it.
func tlsCA(t *testing.T, args ...string) (dir, out string) {
	t.Helper()
	dir = t.TempDir()
	out, _, err := runCLI(t, append([]string{"tls", "ca", "create", "--dir", dir}, args...)...)
	if err != nil {
		t.Fatalf("tls ca create: %v", err)
	}
	return dir, out
}

// wantFiles fails the test unless dir holds exactly the files of modes.
func wantFiles(t *testing.T, dir string, modes map[string]os.FileMode) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		want, ok := modes[e.Name()]
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %v, want %v", e.Name(), got, want)
		}
	}
	if len(names) != len(modes) {
		t.Errorf("files %q, want exactly %d: %v", names, len(modes), modes)
	}
}

func TestTLSCACreate(t *testing.T) {
	dir, out := tlsCA(t, "--trust-domain", "example.shoal")
	wantFiles(t, dir, map[string]os.FileMode{"shoal-agent-ca.pem": 0o644, "shoal-agent-ca-key.pem": 0o600})
	for _, want := range []string{
		"wrote " + filepath.Join(dir, "shoal-agent-ca.pem"),
		"wrote " + filepath.Join(dir, "shoal-agent-ca-key.pem"),
		"trust domain: example.shoal\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	cert, err := os.ReadFile(filepath.Join(dir, "shoal-agent-ca.pem"))
	if err != nil || !strings.HasPrefix(string(cert), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("the CA file is not a PEM certificate (%v)", err)
	}
	if want := time.Now().AddDate(0, 0, 1825).UTC().Format("2006-01-02"); !strings.Contains(out, want) {
		t.Errorf("output does not say the CA is valid until %s (the default 1825 days):\n%s", want, out)
	}
}

func TestTLSCACreateRandomTrustDomain(t *testing.T) {
	_, out := tlsCA(t)
	if !regexp.MustCompile(`(?m)^trust domain: [0-9a-f-]{36}\.shoal$`).MatchString(out) {
		t.Errorf("no random trust domain in the output:\n%s", out)
	}
}

func TestTLSCACreateRefusesToOverwrite(t *testing.T) {
	dir, _ := tlsCA(t)
	before, _ := os.ReadFile(filepath.Join(dir, "shoal-agent-ca-key.pem"))
	_, _, err := runCLI(t, "tls", "ca", "create", "--dir", dir)
	wantErr(t, err, filepath.Join(dir, "shoal-agent-ca.pem")+" already exists", "nothing written")
	after, _ := os.ReadFile(filepath.Join(dir, "shoal-agent-ca-key.pem"))
	if string(before) != string(after) {
		t.Error("the CA key was overwritten")
	}
	wantFiles(t, dir, map[string]os.FileMode{"shoal-agent-ca.pem": 0o644, "shoal-agent-ca-key.pem": 0o600})

	// One file of the pair is enough to refuse: the other is not written.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "shoal-agent-ca-key.pem"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCLI(t, "tls", "ca", "create", "--dir", other)
	wantErr(t, err, "shoal-agent-ca-key.pem already exists")
	wantFiles(t, other, map[string]os.FileMode{"shoal-agent-ca-key.pem": 0o600})
}

func TestTLSNodeCreate(t *testing.T) {
	dir, _ := tlsCA(t, "--trust-domain", "example.shoal")
	caCert, caKey := filepath.Join(dir, "shoal-agent-ca.pem"), filepath.Join(dir, "shoal-agent-ca-key.pem")
	out, _, err := runCLI(t, "tls", "node", "create", "--node", "web-1", "--ca-cert", caCert, "--ca-key", caKey, "--days", "30", "--dir", dir)
	if err != nil {
		t.Fatalf("tls node create: %v", err)
	}
	wantFiles(t, dir, map[string]os.FileMode{
		"shoal-agent-ca.pem": 0o644, "shoal-agent-ca-key.pem": 0o600,
		"shoal-node-web-1.pem": 0o644, "shoal-node-web-1-key.pem": 0o600,
	})
	for _, want := range []string{
		"wrote " + filepath.Join(dir, "shoal-node-web-1.pem"),
		"wrote " + filepath.Join(dir, "shoal-node-web-1-key.pem"),
		"identity: spiffe://web-1.example.shoal\n",
		time.Now().AddDate(0, 0, 30).UTC().Format("2006-01-02"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	b, err := pki.LoadBundle(caCert, filepath.Join(dir, "shoal-node-web-1.pem"), filepath.Join(dir, "shoal-node-web-1-key.pem"), "web-1", time.Now())
	if err != nil {
		t.Fatalf("LoadBundle refuses what tls node create wrote: %v", err)
	}
	if b.TrustDomain != "example.shoal" || b.Node != "web-1" {
		t.Errorf("bundle of %q in %q", b.Node, b.TrustDomain)
	}
	if _, err := b.IssueLeaf("api", time.Hour, time.Now()); err != nil {
		t.Errorf("IssueLeaf: %v", err)
	}

	_, _, err = runCLI(t, "tls", "node", "create", "--node", "web-1", "--ca-cert", caCert, "--ca-key", caKey, "--dir", dir)
	wantErr(t, err, "shoal-node-web-1.pem already exists", "nothing written")
}

// TestTLSNodeCreateDefaultFiles runs in the CA's directory, as an operator
// would: the CA files are found by their default names.
func TestTLSNodeCreateDefaultFiles(t *testing.T) {
	dir, _ := tlsCA(t)
	t.Chdir(dir)
	if _, _, err := runCLI(t, "tls", "node", "create", "--node", "db"); err != nil {
		t.Fatalf("tls node create: %v", err)
	}
	if _, err := pki.LoadBundle("shoal-agent-ca.pem", "shoal-node-db.pem", "shoal-node-db-key.pem", "db", time.Now()); err != nil {
		t.Errorf("LoadBundle: %v", err)
	}
}

func TestTLSBadInput(t *testing.T) {
	dir, _ := tlsCA(t)
	caCert, caKey := filepath.Join(dir, "shoal-agent-ca.pem"), filepath.Join(dir, "shoal-agent-ca-key.pem")
	otherDir, _ := tlsCA(t)
	otherKey := filepath.Join(otherDir, "shoal-agent-ca-key.pem")
	ca := []string{"tls", "ca", "create"}
	nodeCmd := []string{"tls", "node", "create"}
	node := func(args ...string) []string {
		return append([]string{"--ca-cert", caCert, "--ca-key", caKey}, args...)
	}
	for _, tt := range []struct {
		name      string
		cmd, args []string
		want      []string
	}{
		{"ca: no days", ca, []string{"--days", "0"}, []string{"--days 0 is out of range"}},
		{"ca: negative days", ca, []string{"--days", "-5"}, []string{"--days -5 is out of range"}},
		{"ca: too many days", ca, []string{"--days", "1000000"}, []string{"--days 1000000 is out of range"}},
		{"ca: bad trust domain", ca, []string{"--trust-domain", "Bad_Domain"}, []string{`trust domain "Bad_Domain"`}},
		{"ca: an argument", ca, []string{"extra"}, []string{"shoal tls ca create takes no arguments", `"extra"`}},
		{"ca: unknown flag", ca, []string{"--colour"}, []string{"flag provided but not defined: -colour", `see "shoal tls ca create --help"`}},
		{"ca: no such dir", ca, []string{"--dir", filepath.Join(dir, "nope")}, []string{"--dir", "no such file"}},
		{"ca: dir is a file", ca, []string{"--dir", caCert}, []string{"is not a directory"}},
		{"node: no --node", nodeCmd, node(), []string{"needs --node NAME"}},
		{"node: bad name", nodeCmd, node("--node", "a.b"), []string{`node name "a.b"`}},
		{"node: path in name", nodeCmd, node("--node", "../x"), []string{`node name "../x"`}},
		{"node: no days", nodeCmd, node("--node", "a", "--days", "0"), []string{"--days 0 is out of range"}},
		{"node: unreadable CA", nodeCmd, []string{"--node", "a", "--ca-cert", filepath.Join(dir, "missing.pem"), "--ca-key", caKey}, []string{"--ca-cert", "missing.pem", "no such file"}},
		{"node: unreadable key", nodeCmd, []string{"--node", "a", "--ca-cert", caCert, "--ca-key", filepath.Join(dir, "missing.pem")}, []string{"--ca-key", "no such file"}},
		{"node: key of another CA", nodeCmd, []string{"--node", "a", "--ca-cert", caCert, "--ca-key", otherKey}, []string{"the CA key does not match the CA certificate"}},
		{"node: CA cert is the key", nodeCmd, []string{"--node", "a", "--ca-cert", caKey, "--ca-key", caKey}, []string{"no PEM CERTIFICATE block"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := t.TempDir()
			args := append(append(append([]string{}, tt.cmd...), "--dir", out), tt.args...)
			_, _, err := runCLI(t, args...)
			wantErr(t, err, tt.want...)
			wantFiles(t, out, nil)
		})
	}
}

func TestTLSUnknownSubcommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"tls", "ca", "delete"}, `see "shoal tls ca --help"`},
		{[]string{"tls", "cert"}, `see "shoal tls --help"`},
	} {
		_, _, err := runCLI(t, tt.args...)
		wantErr(t, err, "unknown command", tt.want)
	}
	out, _, err := runCLI(t, "tls")
	if err != nil || !strings.Contains(out, "ca") || !strings.Contains(out, "node") {
		t.Errorf("shoal tls: %v, help:\n%s", err, out)
	}
}

// TestTLSExitStatus runs the binary's main on bad input, in a child
// process through TestMainReportsOneLine's hook: it must exit 1 with one
// line on stderr and write nothing.
func TestTLSExitStatus(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainReportsOneLine$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_RUN_MAIN=tls ca create --days 0 --dir "+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exited with %v, want status 1 (stderr %q)", err, stderr.String())
	}
	if got := stderr.String(); got != "shoal: --days 0 is out of range 1-36500\n" {
		t.Errorf("stderr %q", got)
	}
	wantFiles(t, dir, nil)
}
