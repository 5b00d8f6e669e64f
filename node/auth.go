package node

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// guard is the API's front door: every request passes its checks before
// routing, in this order:
//
//  1. Host (loopback binds only): a browser tricked by DNS rebinding into
//     calling the local API sends the attacker's host name; only loopback
//     IPs, "localhost", the bind address and AllowedHosts pass.
//  2. Origin (writes): browsers send it on cross-site requests; a write
//     whose Origin is not an allowed host is refused, so that a web page
//     cannot POST to the local API (CSRF).
//  3. Token (writes, and reads with TokenReads), compared in constant time.
//  4. Path: segments with control or bidirectional characters, invalid
//     UTF-8 or over maxPathSegment bytes are refused before any handler.
//
// Refusals are 403 "Permission denied: ..." (400 for a bad path), one line,
// as Consul words them. The 403s are counted by reason (apiRefusalReasons)
// and logged once per client IP and reason.
type guard struct {
	tokenSum   [sha256.Size]byte // of the token; the token itself is not kept
	token      bool
	tokenReads bool
	checkHost  bool            // the API binds a loopback address
	allowed    map[string]bool // lower-case host names and IPs
	log        *slog.Logger
	refused    refusalCounter
}

// Why the API refused a request (the reason label of
// shoal_http_refused_total).
const (
	refusedHost       = "host"          // a Host not allowed on a loopback bind
	refusedOrigin     = "origin"        // a cross-site write
	refusedNoToken    = "token_missing" // a write (or read) without a token
	refusedWrongToken = "token_wrong"   // with a token that does not match
)

var apiRefusalReasons = []string{refusedHost, refusedOrigin, refusedNoToken, refusedWrongToken}

// maxPathSegment bounds one segment of a request path: longer than any ID
// (a maintenance check ID of a 128-byte service ID is 149 bytes).
const maxPathSegment = 256

func newGuard(c HTTPConfig, bindAddr string, log *slog.Logger) *guard {
	g := &guard{token: c.Token != "", tokenReads: c.TokenReads, allowed: map[string]bool{"localhost": true}, log: log}
	g.tokenSum = sha256.Sum256([]byte(c.Token))
	host, _, _ := net.SplitHostPort(bindAddr)
	if ip := net.ParseIP(host); ip != nil {
		g.checkHost = ip.IsLoopback()
		if !ip.IsUnspecified() {
			g.allowed[ip.String()] = true
		}
	}
	for _, h := range c.AllowedHosts {
		g.allowed[canonicalHost(h)] = true
	}
	return g
}

// deny counts and logs a refusal (the log once per client IP and reason),
// then answers 403 with the message.
func (g *guard) deny(w http.ResponseWriter, r *http.Request, reason, format string, args ...any) {
	client := hostOf(r.RemoteAddr)
	msg := fmt.Sprintf(format, args...)
	if g.refused.add(client, reason) && g.log != nil {
		g.log.Warn("refused API request", "client", client, "reason", reason, "method", r.Method, "path", r.URL.Path, "err", msg)
	}
	writeError(w, http.StatusForbidden, "%s", msg)
}

// secretPath reports whether a read of path answers a secret and so takes
// the token as a write does: a leaf answer carries a private key (Consul
// asks for service:write).
func secretPath(path string) bool {
	return strings.HasPrefix(path, "/v1/agent/connect/ca/leaf/")
}

func (g *guard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.checkHost && !g.hostAllowed(r.Host) {
			g.deny(w, r, refusedHost, "Permission denied: Host %q is not allowed on this loopback-only API (DNS rebinding protection; see http_allowed_hosts)", r.Host)
			return
		}
		write := r.Method != http.MethodGet && r.Method != http.MethodHead
		secret := secretPath(r.URL.Path)
		if origin := r.Header.Get("Origin"); write && origin != "" && !g.originAllowed(origin) {
			g.deny(w, r, refusedOrigin, "Permission denied: cross-site write from Origin %q refused", origin)
			return
		}
		if g.token && (write || secret || g.tokenReads) {
			tok, ok := requestToken(r)
			switch {
			case !ok:
				g.deny(w, r, refusedNoToken, "Permission denied: this agent requires a token (X-Consul-Token header, Authorization: Bearer, or ?token=)")
				return
			case !g.tokenMatches(tok):
				g.deny(w, r, refusedWrongToken, "Permission denied: token not accepted")
				return
			}
		}
		if reason := badPath(r.URL.Path); reason != "" {
			writeError(w, http.StatusBadRequest, "invalid path: %s", reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenMatches compares in constant time: both sides are hashed first, so
// neither the content nor the length of the token leaks through timing.
func (g *guard) tokenMatches(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], g.tokenSum[:]) == 1
}

// requestToken finds the token of a request where Consul looks for it, in
// Consul's order: X-Consul-Token, Authorization: Bearer, ?token=.
func requestToken(r *http.Request) (string, bool) {
	if tok := r.Header.Get("X-Consul-Token"); tok != "" {
		return tok, true
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		if scheme, tok, ok := strings.Cut(auth, " "); ok && strings.EqualFold(scheme, "Bearer") {
			if tok = strings.TrimSpace(tok); tok != "" {
				return tok, true
			}
		}
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok, true
	}
	return "", false
}

// hostAllowed reports whether a Host header may reach a loopback API. An
// absent Host (HTTP/1.0) is not a browser's and passes.
func (g *guard) hostAllowed(hostport string) bool {
	if hostport == "" {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = canonicalHost(host)
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return true
	}
	return g.allowed[host]
}

// originAllowed reports whether a browser Origin ("scheme://host[:port]")
// names a host the API accepts.
func (g *guard) originAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // "null" (sandboxed pages, file://) included
	}
	return g.hostAllowed(u.Host)
}

// canonicalHost lower-cases a host name, drops IPv6 brackets and a
// trailing dot, and writes IPs in their canonical form.
func canonicalHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return h
}

// badPath says what is wrong with a request path, or "" when nothing is:
// path parameters (IDs, names, addresses) must be valid UTF-8 without
// control or bidirectional-formatting characters, each segment at most
// maxPathSegment bytes.
func badPath(p string) string {
	if !utf8.ValidString(p) {
		return "not valid UTF-8"
	}
	for _, seg := range strings.Split(p, "/") {
		if len(seg) > maxPathSegment {
			return fmt.Sprintf("a path segment is over %d bytes", maxPathSegment)
		}
	}
	for _, r := range p {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return fmt.Sprintf("forbidden character %U", r)
		}
	}
	return ""
}
