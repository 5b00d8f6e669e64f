package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// HTTPConfig holds the access control and hardening of the HTTP API. The
// API binds loopback by default; these settings matter most when it does
// not, or when untrusted users share the machine.
type HTTPConfig struct {
	// Token, when set, is required on every write (any method but GET and
	// HEAD), as Consul's ACL token: an X-Consul-Token header, an
	// "Authorization: Bearer" header or a ?token= parameter. Empty: the API
	// is open to whoever can reach it.
	Token string
	// TokenReads requires Token on reads too.
	TokenReads bool
	// AllowedHosts extends the Host header values the API accepts while it
	// binds a loopback address (DNS rebinding protection): loopback IPs,
	// "localhost" and the bind address are always allowed, with any port.
	// Entries are host names or IPs without a port.
	AllowedHosts []string
	// MaxConnsPerClient caps the concurrent connections from one client IP;
	// the ones above it are closed at once. Default 256.
	MaxConnsPerClient int
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	// Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Default
	// 30s. There is deliberately no write timeout: blocking queries hold
	// their answer for up to ten minutes.
	ReadTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers. Default 64 KiB.
	MaxHeaderBytes int
	// TLSCertFile and TLSKeyFile are PEM files; when both are set the API
	// serves HTTPS only. Empty: plain HTTP.
	TLSCertFile, TLSKeyFile string
}

// DefaultHTTPConfig returns the API's production defaults: no token, TLS
// off, and limits generous enough for any local client.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{
		MaxConnsPerClient: 256,              // per IP; loopback clients included
		ReadHeaderTimeout: 10 * time.Second, // slowloris on headers
		ReadTimeout:       30 * time.Second, // slow bodies
		MaxHeaderBytes:    64 << 10,         // Go's default is 1 MiB
	}
}

// Validate reports every problem with the API settings at once.
func (c *HTTPConfig) Validate() error {
	var errs []error
	if c.Token != "" {
		if err := validateToken(c.Token); err != nil {
			errs = append(errs, fmt.Errorf("http-token: %w", err))
		}
	} else if c.TokenReads {
		errs = append(errs, errors.New("http-token-reads needs an http-token"))
	}
	for _, h := range c.AllowedHosts {
		if h == "" || (net.ParseIP(h) == nil && (len(h) > maxHostnameLen || !hostnameRe.MatchString(h))) {
			errs = append(errs, fmt.Errorf("http-allowed-hosts %q: want a host name or an IP address, without a port", h))
		}
	}
	if c.MaxConnsPerClient < 1 {
		errs = append(errs, fmt.Errorf("http-max-conns-per-client %d: must be at least 1", c.MaxConnsPerClient))
	}
	for name, d := range map[string]time.Duration{"read header timeout": c.ReadHeaderTimeout, "read timeout": c.ReadTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("http %s %v: must be positive", name, d))
		}
	}
	if c.MaxHeaderBytes < 4<<10 {
		errs = append(errs, fmt.Errorf("http max header bytes %d: must be at least 4096", c.MaxHeaderBytes))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("http-tls-cert and http-tls-key go together: set both or neither"))
	}
	return errors.Join(errs...)
}

// validateToken checks a token: printable ASCII, as HTTP headers carry it.
func validateToken(tok string) error {
	if len(tok) > 512 {
		return fmt.Errorf("token of %d bytes: at most 512", len(tok))
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] >= 0x7f {
			return errors.New("token must be printable ASCII without spaces")
		}
	}
	return nil
}

// listenHTTP binds the API's address: TCP, capped per client IP, and TLS
// when a certificate is configured. The certificate is loaded here, so a
// bad one fails Start before anything else binds.
func (a *Agent) listenHTTP() (net.Listener, error) {
	hc := a.cfg.HTTP
	var tlsCfg *tls.Config
	if hc.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(hc.TLSCertFile, hc.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("http api: tls: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http api: %w", err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() && hc.Token == "" {
		a.log.Warn("the HTTP API is reachable from the network and needs no token: anyone who reaches it can change this node's services (set http_token)",
			"http", ln.Addr().String())
	}
	ln = newPerIPListener(ln, hc.MaxConnsPerClient, a.log)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	return ln, nil
}

// newHTTPServer returns the API server: the handler behind the access
// checks of g, with the configured timeouts and limits.
func (a *Agent) newHTTPServer(g *guard, h http.Handler) *http.Server {
	hc := a.cfg.HTTP
	return &http.Server{
		Handler:           g.wrap(h),
		ReadHeaderTimeout: hc.ReadHeaderTimeout,
		ReadTimeout:       hc.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    hc.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
}

// perIPListener caps the concurrent connections of each client IP. A
// connection above the cap is closed as soon as it is accepted: the client
// sees a reset or EOF, never a hang.
type perIPListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu    sync.Mutex // guards conns
	conns map[string]int
}

func newPerIPListener(ln net.Listener, max int, log *slog.Logger) *perIPListener {
	return &perIPListener{Listener: ln, max: max, log: log, conns: make(map[string]int)}
}

// Accept implements net.Listener.
func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := clientIP(c.RemoteAddr())
		l.mu.Lock()
		n := l.conns[ip]
		if n < l.max {
			l.conns[ip] = n + 1
		}
		l.mu.Unlock()
		if n >= l.max {
			l.log.Debug("http api: connection refused: per-client cap reached", "client", ip, "cap", l.max)
			c.Close()
			continue
		}
		return &countedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *perIPListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[ip]--; l.conns[ip] <= 0 {
		delete(l.conns, ip)
	}
}

// open reports the connections currently counted for ip.
func (l *perIPListener) open(ip string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[ip]
}

// clientIP is the IP of a peer's address, without its port.
func clientIP(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	return hostOf(addr.String())
}

// hostOf is the host of a "host:port" address, or the address as it is
// when it has no port.
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// countedConn gives its slot back once, on the first Close.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// validPathID checks an ID taken from the request path, answering 400 for a
// malformed one (bad characters, too long) so that only well-formed IDs
// reach the lookups, which answer 404 for unknown ones. For check IDs, the
// maintenance checks ("_node_maintenance", "_service_maintenance:ID") are
// well-formed too.
func validPathID(w http.ResponseWriter, what, id string) bool {
	rest := id
	if strings.HasPrefix(what, "check") {
		if id == nodeMaintID {
			return true
		}
		rest = strings.TrimPrefix(id, "_service_maintenance:")
	}
	if err := validateID(what, rest); err != nil {
		writeError(w, http.StatusBadRequest, "invalid path: %v", err)
		return false
	}
	return true
}

var _ net.Listener = (*perIPListener)(nil)
