package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/node"
)

// TestClientFlagsOnEveryClientCommand checks that every command that talks
// to an agent takes --token and the TLS flags, and that the agent, whose
// --http-addr is the address it listens on, does not. (The agent's own
// --ca-file is the mesh's roots, not a client's trust.)
func TestClientFlagsOnEveryClientCommand(t *testing.T) {
	clients := 0
	for _, cmd := range newApp().Commands {
		if !hasFlag(cmd, "http-addr") {
			continue
		}
		for _, f := range []string{"token", "ca-file", "tls-skip-verify"} {
			if cmd.Name == "agent" && f == "ca-file" {
				continue
			}
			if got := hasFlag(cmd, f); got != (cmd.Name != "agent") {
				t.Errorf("%s: has --%s = %v", cmd.Name, f, got)
			}
		}
		if cmd.Name != "agent" {
			clients++
		}
	}
	if clients < 8 {
		t.Errorf("only %d client commands found", clients)
	}
}

// tokenRecorder is an agent stand-in that records the token of each request.
type tokenRecorder struct {
	mu     sync.Mutex
	tokens []string
}

func (r *tokenRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.tokens = append(r.tokens, req.Header.Get("X-Consul-Token"))
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("[]"))
}

func (r *tokenRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tokens) == 0 {
		return "<none>"
	}
	return r.tokens[len(r.tokens)-1]
}

func TestClientSendsToken(t *testing.T) {
	rec := &tokenRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	if _, _, err := runCLI(t, "members", "--http-addr", addr); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got != "" {
		t.Errorf("token sent without --token: %q", got)
	}
	if _, _, err := runCLI(t, "members", "--http-addr", addr, "--token", "flag-token"); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got != "flag-token" {
		t.Errorf("--token: sent %q", got)
	}
	t.Setenv("SHOAL_HTTP_TOKEN", "env-token")
	if _, _, err := runCLI(t, "members", "--http-addr", addr); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got != "env-token" {
		t.Errorf("$SHOAL_HTTP_TOKEN: sent %q", got)
	}
}

// TestClientTokenAgainstAgent runs the CLI against an agent that requires a
// token: writes without it fail with the agent's one-line reason.
func TestClientTokenAgainstAgent(t *testing.T) {
	cfg := node.TestConfig("n0")
	cfg.HTTP.Token = "s3cret"
	a, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()

	_, _, err = runCLI(t, "register", "--http-addr", a.HTTPAddr(), "--name", "web", "--port", "80")
	wantErr(t, err, "403", "Permission denied")
	_, _, err = runCLI(t, "register", "--http-addr", a.HTTPAddr(), "--token", "wrong", "--name", "web", "--port", "80")
	wantErr(t, err, "403", "Permission denied")
	if _, _, err := runCLI(t, "register", "--http-addr", a.HTTPAddr(), "--token", "s3cret", "--name", "web", "--port", "80"); err != nil {
		t.Fatalf("register with the token: %v", err)
	}
	// Reads stay open.
	out, _, err := runCLI(t, "services", "--http-addr", a.HTTPAddr())
	if err != nil || !strings.Contains(out, "web") {
		t.Errorf("services without a token: %q, %v", out, err)
	}
}

func TestClientHTTPS(t *testing.T) {
	rec := &tokenRecorder{}
	srv := httptest.NewTLSServer(rec)
	defer srv.Close()
	addr := "https://" + srv.Listener.Addr().String()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	_, _, err := runCLI(t, "members", "--http-addr", addr)
	wantErr(t, err, "certificate")
	if _, _, err := runCLI(t, "members", "--http-addr", addr, "--ca-file", ca, "--token", "t"); err != nil {
		t.Errorf("with --ca-file: %v", err)
	}
	if rec.last() != "t" {
		t.Errorf("token over HTTPS: %q", rec.last())
	}
	if _, _, err := runCLI(t, "members", "--http-addr", addr, "--tls-skip-verify"); err != nil {
		t.Errorf("with --tls-skip-verify: %v", err)
	}
	t.Setenv("SHOAL_HTTP_ADDR", addr)
	t.Setenv("SHOAL_CACERT", ca)
	if _, _, err := runCLI(t, "members"); err != nil {
		t.Errorf("with $SHOAL_HTTP_ADDR and $SHOAL_CACERT: %v", err)
	}
	_, _, err = runCLI(t, "members", "--ca-file", filepath.Join(t.TempDir(), "missing.pem"))
	wantErr(t, err, "--ca-file")
	notPEM := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	_, _, err = runCLI(t, "members", "--ca-file", notPEM)
	wantErr(t, err, "no PEM certificate")
}

// TestAgentSecurityFlags checks that the agent's API flags reach its
// configuration, over the configuration file.
func TestAgentSecurityFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "agent.hcl")
	os.WriteFile(file, []byte(`http_token = "from-file"
http_allowed_hosts = ["file.example"]
http_max_conns_per_client = 7
`), 0o600)
	run := func(args ...string) node.Config {
		t.Helper()
		cmd := agentCommand()
		var got node.Config
		cmd.Action = func(c *cli.Context) error {
			cfg, _, _, err := agentConfig(c)
			got = cfg
			return err
		}
		app := &cli.App{Commands: []*cli.Command{cmd}, ExitErrHandler: func(*cli.Context, error) {}}
		if err := app.Run(append([]string{"shoal", "agent", "--dev", "--config-file", file}, args...)); err != nil {
			t.Fatal(err)
		}
		return got
	}
	cfg := run()
	if cfg.HTTP.Token != "from-file" || cfg.HTTP.MaxConnsPerClient != 7 || cfg.HTTP.AllowedHosts[0] != "file.example" {
		t.Errorf("from the file: %+v", cfg.HTTP)
	}
	cfg = run("--http-token", "from-flag", "--http-token-reads", "--http-allowed-hosts", "a.example",
		"--http-allowed-hosts", "b.example", "--http-max-conns-per-client", "9",
		"--http-tls-cert", "c.pem", "--http-tls-key", "k.pem")
	h := cfg.HTTP
	if h.Token != "from-flag" || !h.TokenReads || strings.Join(h.AllowedHosts, ",") != "a.example,b.example" ||
		h.MaxConnsPerClient != 9 || h.TLSCertFile != "c.pem" || h.TLSKeyFile != "k.pem" {
		t.Errorf("from the flags: %+v", h)
	}
	t.Setenv("SHOAL_HTTP_TOKEN", "from-env")
	if cfg := run(); cfg.HTTP.Token != "from-env" {
		t.Errorf("$SHOAL_HTTP_TOKEN: token %q", cfg.HTTP.Token)
	}
}
