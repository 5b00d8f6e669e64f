package node

import (
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/shoal-mesh/shoal/gossip"
)

// The DNS interface answers Consul-style names for the replicated catalog,
// under one domain (default "shoal"), datacenter label optional:
//
//	NAME.service.DOMAIN, TAG.NAME.service.DOMAIN   A, AAAA, SRV
//	_NAME._tcp.service.DOMAIN (RFC 2782)           SRV (_NAME._TAG: tag filter)
//	NODE.node.DOMAIN                               A, AAAA
//	HEX.addr.DOMAIN                                A, AAAA (SRV targets of service addresses)
//
// Only passing instances are answered (node alive, every check passing:
// the ?passing filter of /v1/health/service), in random order. Unknown
// names get NXDOMAIN with the SOA in the authority section, names outside
// the domain REFUSED: unlike Consul, the agent never recurses. SERVFAIL
// means an internal error.

// dnsLog is the DNS interface's logger.
func (a *Agent) dnsLog() *slog.Logger {
	log := a.cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return log.With("component", "dns")
}

// dnsHandler answers queries from the replicated catalog.
type dnsHandler struct {
	cat    *gossip.Catalog
	domain string // lower case, fully qualified: "shoal."
	dc     string // lower case
	ttl    uint32
	log    *slog.Logger
}

func newDNSHandler(cat *gossip.Catalog, cfg *Config, log *slog.Logger) *dnsHandler {
	return &dnsHandler{
		cat:    cat,
		domain: dns.Fqdn(strings.ToLower(cfg.Domain)),
		dc:     strings.ToLower(cfg.Datacenter),
		ttl:    uint32(cfg.DNSTTL / time.Second),
		log:    log,
	}
}

// ServeDNS implements dns.Handler.
func (h *dnsHandler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	if err := w.WriteMsg(h.reply(req, udp)); err != nil {
		h.log.Debug("dns answer not sent", "client", w.RemoteAddr().String(), "err", err)
	}
}

// reply builds the answer to req, sized for the transport.
func (h *dnsHandler) reply(req *dns.Msg, udp bool) (m *dns.Msg) {
	m = new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = false
	defer func() {
		// A bug must cost one answer, not the agent.
		if r := recover(); r != nil {
			h.log.Error("dns query failed", "question", req.Question, "panic", r)
			m = new(dns.Msg)
			m.SetRcode(req, dns.RcodeServerFailure)
		}
	}()
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.SetRcode(req, dns.RcodeNotImplemented)
	case len(req.Question) != 1:
		m.SetRcode(req, dns.RcodeFormatError)
	default:
		h.answer(m, req.Question[0])
	}

	size := dns.MaxMsgSize
	if udp {
		size = dns.MinMsgSize
	}
	if opt := req.IsEdns0(); opt != nil {
		if udp {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
		m.SetEdns0(uint16(min(size, dns.MaxMsgSize)), false)
	}
	// Drops what does not fit and sets TC, so the client retries over TCP.
	m.Truncate(size)
	return m
}

// answer fills m with the answer to q.
func (h *dnsHandler) answer(m *dns.Msg, q dns.Question) {
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return
	}
	if name != h.domain && !strings.HasSuffix(name, "."+h.domain) {
		m.Rcode = dns.RcodeRefused // not ours, and we do not recurse
		return
	}
	// Labels keep the query's case: catalog names are matched exactly
	// first, then case-insensitively.
	raw := q.Name
	if len(raw) != len(name) {
		raw = name // not plain ASCII: lower case will do
	}
	labels := dns.SplitDomainName(raw[:len(raw)-len(h.domain)])
	n := len(labels)
	if n >= 2 && isKind(labels[n-2]) && !isKind(labels[n-1]) {
		// NAME.service.DC.DOMAIN: only this datacenter is known here.
		if !strings.EqualFold(labels[n-1], h.dc) {
			h.nxdomain(m)
			return
		}
		labels, n = labels[:n-1], n-1
	}
	if n == 0 {
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, h.soa())
		} else {
			m.Ns = append(m.Ns, h.soa())
		}
		return
	}
	switch strings.ToLower(labels[n-1]) {
	case "service":
		h.service(m, q, labels[:n-1])
	case "node":
		h.node(m, q, labels[:n-1])
	case "addr":
		h.addr(m, q, labels[:n-1])
	default:
		h.nxdomain(m)
	}
}

func isKind(label string) bool {
	switch strings.ToLower(label) {
	case "service", "node", "addr":
		return true
	}
	return false
}

// service answers NAME.service, TAG.NAME.service and _NAME._PROTO.service.
func (h *dnsHandler) service(m *dns.Msg, q dns.Question, labels []string) {
	var name, tag string
	switch {
	case len(labels) == 1:
		name = labels[0]
	case len(labels) == 2 && strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_"):
		// RFC 2782: _NAME._tcp; as in Consul, any other _PROTO is a tag.
		name, tag = labels[0][1:], labels[1][1:]
		if strings.EqualFold(tag, "tcp") {
			tag = ""
		}
	case len(labels) == 2:
		tag, name = labels[0], labels[1]
	default:
		h.nxdomain(m)
		return
	}
	var passing []gossip.Instance
	for _, in := range h.instances(name) {
		if dnsPassing(in) && (tag == "" || hasTagFold(in.Service.Tags, tag)) {
			passing = append(passing, in)
		}
	}
	if len(passing) == 0 {
		h.nxdomain(m)
		return
	}
	rand.Shuffle(len(passing), func(i, j int) { passing[i], passing[j] = passing[j], passing[i] })

	seen := make(map[string]bool)
	switch q.Qtype {
	case dns.TypeSRV:
		for _, in := range passing {
			target, ip := h.srvTarget(in)
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:      h.hdr(q.Name, dns.TypeSRV),
				Priority: 1,
				Weight:   uint16(min(max(in.Service.Weights.Passing, 0), 65535)),
				Port:     uint16(in.Service.Port),
				Target:   target,
			})
			if ip != nil && !seen[target] {
				seen[target] = true
				m.Extra = append(m.Extra, h.ipRR(target, ip))
			}
		}
	case dns.TypeA, dns.TypeAAAA, dns.TypeANY:
		for _, in := range passing {
			ip := instanceIP(in)
			if ip == nil || seen[ip.String()] || !wants(q.Qtype, ip) {
				continue // a host name, or already answered
			}
			seen[ip.String()] = true
			m.Answer = append(m.Answer, h.ipRR(q.Name, ip))
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, h.soa()) // the name exists, not this type
	}
}

// node answers NODE.node with the member's address.
func (h *dnsHandler) node(m *dns.Msg, q dns.Question, labels []string) {
	if len(labels) != 1 {
		h.nxdomain(m)
		return
	}
	mem, ok := h.member(labels[0])
	if !ok {
		h.nxdomain(m)
		return
	}
	if wants(q.Qtype, mem.Addr) {
		m.Answer = append(m.Answer, h.ipRR(q.Name, mem.Addr))
	} else {
		m.Ns = append(m.Ns, h.soa())
	}
}

// addr answers HEX.addr, the SRV target of an instance with its own
// address: 8 hex digits for IPv4, 32 for IPv6, as Consul.
func (h *dnsHandler) addr(m *dns.Msg, q dns.Question, labels []string) {
	var ip net.IP
	if len(labels) == 1 && (len(labels[0]) == 8 || len(labels[0]) == 32) {
		if b, err := hex.DecodeString(labels[0]); err == nil {
			ip = net.IP(b)
		}
	}
	if ip == nil {
		h.nxdomain(m)
		return
	}
	if wants(q.Qtype, ip) {
		m.Answer = append(m.Answer, h.ipRR(q.Name, ip))
	} else {
		m.Ns = append(m.Ns, h.soa())
	}
}

// instances returns the instances of a service, matching its name exactly
// or, failing that, case-insensitively as DNS names compare.
func (h *dnsHandler) instances(name string) []gossip.Instance {
	if ins := h.cat.Instances(name); len(ins) > 0 {
		return ins
	}
	for svc := range h.cat.Services() {
		if strings.EqualFold(svc, name) {
			return h.cat.Instances(svc)
		}
	}
	return nil
}

// member returns a registered member by name, matched as instances does.
func (h *dnsHandler) member(name string) (gossip.Member, bool) {
	if m, ok := h.cat.Member(name); ok {
		return m, registered(m)
	}
	for _, m := range h.cat.Members() {
		if strings.EqualFold(m.Name, name) {
			return m, registered(m)
		}
	}
	return gossip.Member{}, false
}

// srvTarget returns the SRV target of an instance and the address for the
// additional section (nil for a host name, which resolves elsewhere).
func (h *dnsHandler) srvTarget(in gossip.Instance) (string, net.IP) {
	addr := in.Service.Address
	if addr == "" {
		return dns.Fqdn(in.Node.Name + ".node." + h.domain), in.Node.Addr
	}
	ip := net.ParseIP(addr)
	switch {
	case ip == nil:
		return dns.Fqdn(addr), nil
	case ip.Equal(in.Node.Addr):
		return dns.Fqdn(in.Node.Name + ".node." + h.domain), in.Node.Addr
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return hex.EncodeToString(ip) + ".addr." + h.domain, ip
}

// instanceIP is where an instance is reached: its service address, else
// its node's. Nil when the service address is a host name.
func instanceIP(in gossip.Instance) net.IP {
	if in.Service.Address == "" {
		return in.Node.Addr
	}
	return net.ParseIP(in.Service.Address)
}

// dnsPassing applies /v1/health/service?passing: the node is alive and
// every check of the instance passes.
func dnsPassing(in gossip.Instance) bool {
	if in.Node.Status != gossip.StatusAlive {
		return false
	}
	for _, c := range in.Service.Checks {
		if c.Status != gossip.StatusPassing {
			return false
		}
	}
	return true
}

func hasTagFold(tags []string, tag string) bool {
	for _, t := range tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// wants reports whether a query of type qtype is answered by ip.
func wants(qtype uint16, ip net.IP) bool {
	if ip == nil {
		return false
	}
	v4 := ip.To4() != nil
	return qtype == dns.TypeANY || (qtype == dns.TypeA && v4) || (qtype == dns.TypeAAAA && !v4)
}

func (h *dnsHandler) hdr(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: h.ttl}
}

// ipRR is an A or AAAA record for ip.
func (h *dnsHandler) ipRR(name string, ip net.IP) dns.RR {
	if v4 := ip.To4(); v4 != nil {
		return &dns.A{Hdr: h.hdr(name, dns.TypeA), A: v4}
	}
	return &dns.AAAA{Hdr: h.hdr(name, dns.TypeAAAA), AAAA: ip}
}

func (h *dnsHandler) nxdomain(m *dns.Msg) {
	m.Rcode = dns.RcodeNameError
	m.Ns = append(m.Ns, h.soa())
}

// soa is the zone's SOA record; its TTL and minimum (the negative-caching
// TTL) are the configured TTL.
func (h *dnsHandler) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     h.hdr(h.domain, dns.TypeSOA),
		Ns:      "ns." + h.domain,
		Mbox:    "hostmaster." + h.domain,
		Serial:  uint32(time.Now().Unix()),
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  h.ttl,
	}
}

var _ dns.Handler = (*dnsHandler)(nil)
