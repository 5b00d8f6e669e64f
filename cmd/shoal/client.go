package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

const (
	// defaultHTTPAddr is where "shoal agent" serves its HTTP API by default.
	defaultHTTPAddr = "127.0.0.1:8500"
	// requestTimeout bounds one request to the agent, from dial to the end
	// of the body.
	requestTimeout = 10 * time.Second
	// maxErrorBody is how much of an error answer is read to find its
	// reason.
	maxErrorBody = 64 << 10
	// maxReasonLen cuts a reason that is not the agent's one-line message
	// (an HTML page from a proxy, say) down to something printable.
	maxReasonLen = 200
)

// httpAddrFlag is the agent address flag of the client commands. It is
// defined on each command, not globally, because "shoal agent" has a
// --http-addr of its own: the address it listens on.
func httpAddrFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "http-addr",
		Usage:   "`ADDRESS` of the agent's HTTP API (host:port or http[s]://host:port)",
		EnvVars: []string{"SHOAL_HTTP_ADDR"},
		Value:   defaultHTTPAddr,
	}
}

// clientFlags are the access flags every client command has next to
// --http-addr: the API token and how to trust an HTTPS agent. newApp adds
// them to each command that has httpAddrFlag.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{
			Name:    "token",
			Usage:   "API `TOKEN` the agent requires (its --http-token), sent as X-Consul-Token",
			EnvVars: []string{"SHOAL_HTTP_TOKEN"},
		},
		&cli.StringFlag{
			Name:    "ca-file",
			Usage:   "PEM `FILE` of the CA that signed an https:// agent's certificate",
			EnvVars: []string{"SHOAL_CACERT"},
		},
		&cli.BoolFlag{
			Name:    "tls-skip-verify",
			Usage:   "do not verify an https:// agent's certificate (testing only)",
			EnvVars: []string{"SHOAL_TLS_SKIP_VERIFY"},
		},
	}
}

// apiClient talks to one agent's HTTP API.
type apiClient struct {
	// addr is the agent's address as the user gave it, for messages.
	addr string
	// token is sent as X-Consul-Token when set.
	token string
	http  *http.Client
}

// newClient returns a client for the agent named by c's --http-addr, with
// its --token and TLS settings.
func newClient(c *cli.Context) (*apiClient, error) {
	a := &apiClient{
		addr:  strings.TrimSpace(c.String("http-addr")),
		token: strings.TrimSpace(c.String("token")),
		http:  &http.Client{Timeout: requestTimeout},
	}
	if _, err := a.baseURL(); err != nil {
		return nil, err
	}
	if ca, skip := c.String("ca-file"), c.Bool("tls-skip-verify"); ca != "" || skip {
		tlsCfg := &tls.Config{InsecureSkipVerify: skip, MinVersion: tls.VersionTLS12}
		if ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("--ca-file: %w", err)
			}
			tlsCfg.RootCAs = x509.NewCertPool()
			if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", ca)
			}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		a.http.Transport = tr
	}
	return a, nil
}

// baseURL turns addr into the URL that API paths are appended to.
func (a *apiClient) baseURL() (string, error) {
	if a.addr == "" {
		return "", errors.New("no agent address: set --http-addr or SHOAL_HTTP_ADDR")
	}
	raw := a.addr
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return "", fmt.Errorf("invalid agent address %q: want host:port or http[s]://host:port", a.addr)
	}
	return u.Scheme + "://" + u.Host, nil
}

// get decodes the JSON answer to GET path into out.
func (a *apiClient) get(ctx context.Context, path string, out any) error {
	return a.do(ctx, http.MethodGet, path, nil, out)
}

// put sends in as JSON (no body if in is nil; a json.RawMessage byte for
// byte) and decodes the answer into out, unless out is nil.
func (a *apiClient) put(ctx context.Context, path string, in, out any) error {
	var body []byte
	switch in := in.(type) {
	case nil:
	case json.RawMessage:
		body = in
	default:
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	return a.do(ctx, http.MethodPut, path, body, out)
}

func (a *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	base, err := a.baseURL()
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("X-Consul-Token", a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return &unreachableError{addr: a.addr, err: err}
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return &statusError{code: resp.StatusCode, status: resp.Status, reason: firstLine(b)}
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if isTimeout(err) {
			return &unreachableError{addr: a.addr, err: err}
		}
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

// statusError is a non-2xx answer from the agent.
type statusError struct {
	code   int
	status string // "400 Bad Request"
	reason string // first line of the body
}

func (e *statusError) Error() string {
	if e.reason == "" {
		return "agent answered " + e.status
	}
	return "agent answered " + e.status + ": " + e.reason
}

// unreachableError is a request that got no answer from the agent.
type unreachableError struct {
	addr string
	err  error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach the Shoal agent at %s: %s (is \"shoal agent\" running? set --http-addr or SHOAL_HTTP_ADDR)",
		e.addr, e.cause())
}

func (e *unreachableError) Unwrap() error { return e.err }

// cause says in a few words why the agent could not be reached; the full
// *url.Error repeats the method and URL, which the message already has.
func (e *unreachableError) cause() string {
	var dnsErr *net.DNSError
	var urlErr *url.Error
	switch {
	case errors.Is(e.err, syscall.ECONNREFUSED):
		return "connection refused"
	case isTimeout(e.err):
		return fmt.Sprintf("no answer within %s", requestTimeout)
	case errors.As(e.err, &dnsErr):
		return dnsErr.Error()
	case errors.As(e.err, &urlErr):
		return urlErr.Err.Error()
	default:
		return e.err.Error()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// firstLine is the first non-empty line of an error body: the agent answers
// errors with a one-line plain-text reason, as Consul does.
func firstLine(b []byte) string {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if r := []rune(line); len(r) > maxReasonLen {
			line = string(r[:maxReasonLen]) + "..."
		}
		return line
	}
	return ""
}
