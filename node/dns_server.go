package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxDNSTTL is the largest TTL a DNS record can carry (RFC 2181: 2^31-1 s).
const maxDNSTTL = time.Duration(1<<31-1) * time.Second

// validateDNS reports the problems of the DNS settings.
func (c *Config) validateDNS() []error {
	var errs []error
	if c.DNSAddr != "" {
		if err := checkHostPort(c.DNSAddr); err != nil {
			errs = append(errs, fmt.Errorf("dns-addr %q: %w", c.DNSAddr, err))
		}
	}
	if d := strings.TrimSuffix(c.Domain, "."); d == "" || strings.HasPrefix(d, ".") || !hostnameRe.MatchString(d) {
		errs = append(errs, fmt.Errorf("domain %q: want a DNS name such as shoal or mesh.example", c.Domain))
	}
	if c.DNSTTL < 0 || c.DNSTTL > maxDNSTTL || c.DNSTTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("dns-ttl %v: want whole seconds, 0s to %v", c.DNSTTL, maxDNSTTL))
	}
	return errs
}

// dnsServer serves DNS over UDP and TCP on one address. Create it with
// listenDNS (which binds, so the agent fails at once on a taken port),
// then serve; shutdown stops both and waits for them.
type dnsServer struct {
	pc  net.PacketConn
	ln  net.Listener
	log *slog.Logger

	udp, tcp *dns.Server
	wg       sync.WaitGroup
}

// listenDNS binds addr on UDP and TCP. With port 0 both get the same
// ephemeral port, as DNS clients expect.
func listenDNS(addr string, log *slog.Logger) (*dnsServer, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return &dnsServer{pc: pc, ln: ln, log: log}, nil
		}
		pc.Close()
		// With port 0 the TCP side of the UDP port chosen may be taken:
		// try another port.
		if port != "0" || try == 10 {
			return nil, fmt.Errorf("dns: %w", err)
		}
	}
}

// Addr is the address the server listens on (UDP and TCP).
func (s *dnsServer) Addr() string { return s.pc.LocalAddr().String() }

// serve starts answering with h and returns once both transports listen.
func (s *dnsServer) serve(h dns.Handler) {
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: s.pc, Handler: h, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: s.ln, Handler: h, NotifyStartedFunc: notify,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("dns server stopped", "err", err)
				notify() // never started: don't keep serve waiting
			}
		}()
	}
	<-started
	<-started
}

// close releases the listeners of a server that never served.
func (s *dnsServer) close() {
	if s == nil {
		return
	}
	s.pc.Close()
	s.ln.Close()
}

// shutdown stops serving, giving TCP clients up to two seconds, and waits
// for the server goroutines. Safe on nil.
func (s *dnsServer) shutdown() {
	if s == nil {
		return
	}
	if s.udp == nil {
		s.close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if err := srv.ShutdownContext(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Debug("dns shutdown", "err", err)
		}
	}
	s.close()
	s.wg.Wait()
}

// DNSAddr is the address of the DNS interface (UDP and TCP), or "" when
// it is disabled.
func (a *Agent) DNSAddr() string {
	if a.dns == nil {
		return ""
	}
	return a.dns.Addr()
}
