package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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

// apiClient talks to one agent's HTTP API.
type apiClient struct {
	// addr is the agent's address as the user gave it, for messages.
	addr string
	http *http.Client
}

// newClient returns a client for the agent named by c's --http-addr.
func newClient(c *cli.Context) (*apiClient, error) {
	a := &apiClient{
		addr: strings.TrimSpace(c.String("http-addr")),
		http: &http.Client{Timeout: requestTimeout},
	}
	if _, err := a.baseURL(); err != nil {
		return nil, err
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
