package node

import (
	"fmt"
	"net"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// dnsQuery asks an agent's DNS interface one question over net ("udp" or
// "tcp"), with EDNS0 when ednsSize > 0.
func dnsQuery(t *testing.T, a *Agent, network, name string, qtype uint16, ednsSize uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if ednsSize > 0 {
		m.SetEdns0(ednsSize, false)
	}
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, a.DNSAddr())
	if err != nil {
		t.Fatalf("dig %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return r
}

// ask queries over UDP and checks the response code.
func dnsAsk(t *testing.T, a *Agent, name string, qtype uint16, rcode int) *dns.Msg {
	t.Helper()
	r := dnsQuery(t, a, "udp", name, qtype, 0)
	if r.Rcode != rcode {
		t.Fatalf("%s %s: rcode %s, want %s\n%v", name, dns.TypeToString[qtype],
			dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode], r)
	}
	return r
}

// answerIPs returns the addresses of the A and AAAA records of a section.
func answerIPs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	sort.Strings(out)
	return out
}

// srvs returns "target:port" of the SRV records of an answer, sorted.
func srvTargets(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if s, ok := rr.(*dns.SRV); ok {
			out = append(out, fmt.Sprintf("%s:%d", s.Target, s.Port))
		}
	}
	sort.Strings(out)
	return out
}

func wantSorted(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// hasSOA reports whether the authority section holds the domain's SOA
// with the given TTL.
func hasSOA(r *dns.Msg, domain string, ttl uint32) bool {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok && soa.Hdr.Name == domain && soa.Hdr.Ttl == ttl && soa.Minttl == ttl {
			return true
		}
	}
	return false
}

// dnsCluster starts two agents with web instances on both, one of them
// failing a TTL check, and waits until n0's catalog has them all.
func dnsCluster(t *testing.T) []*Agent {
	t.Helper()
	as := startAgents(t, 2)
	reg := func(a *Agent, body map[string]any) {
		putOK(t, a, "/v1/agent/service/register", body)
	}
	reg(as[0], map[string]any{"ID": "web-1", "Name": "web", "Tags": []string{"v1", "primary"}, "Address": "10.0.0.1", "Port": 8001})
	reg(as[1], map[string]any{"ID": "web-2", "Name": "web", "Tags": []string{"v2"}, "Address": "10.0.0.2", "Port": 8002})
	reg(as[1], map[string]any{"ID": "web-3", "Name": "web", "Tags": []string{"v2"}, "Port": 8003}) // node address
	reg(as[0], map[string]any{"ID": "web-4", "Name": "web", "Address": "10.0.0.4", "Port": 8004,
		"Check": map[string]any{"CheckID": "ttl-web-4", "TTL": "1h"}}) // critical until passed
	reg(as[0], map[string]any{"ID": "api-6", "Name": "api", "Address": "fd00::6", "Port": 9000})
	testutil.Wait(t, 10*time.Second, "web instances replicated to n0", func() bool {
		return len(as[0].Cluster().Catalog().Instances("web")) == 4
	})
	return as
}

func TestDNSServiceLookups(t *testing.T) {
	as := dnsCluster(t)
	a := as[0]

	t.Run("A", func(t *testing.T) {
		r := dnsAsk(t, a, "web.service.shoal", dns.TypeA, dns.RcodeSuccess)
		wantSorted(t, "A", answerIPs(r.Answer), "10.0.0.1", "10.0.0.2", "127.0.0.1")
		if !r.Authoritative || r.RecursionAvailable {
			t.Errorf("AA=%v RA=%v, want authoritative without recursion", r.Authoritative, r.RecursionAvailable)
		}
		if ttl := r.Answer[0].Header().Ttl; ttl != 0 {
			t.Errorf("TTL %d, want the default 0", ttl)
		}
	})
	t.Run("case-insensitive and datacenter label", func(t *testing.T) {
		r := dnsAsk(t, a, "WEB.Service.SHOAL", dns.TypeA, dns.RcodeSuccess)
		wantSorted(t, "A", answerIPs(r.Answer), "10.0.0.1", "10.0.0.2", "127.0.0.1")
		r = dnsAsk(t, a, "web.service.dc1.shoal", dns.TypeA, dns.RcodeSuccess)
		wantSorted(t, "A in dc1", answerIPs(r.Answer), "10.0.0.1", "10.0.0.2", "127.0.0.1")
		dnsAsk(t, a, "web.service.dc2.shoal", dns.TypeA, dns.RcodeNameError)
	})
	t.Run("AAAA", func(t *testing.T) {
		r := dnsAsk(t, a, "api.service.shoal", dns.TypeAAAA, dns.RcodeSuccess)
		wantSorted(t, "AAAA", answerIPs(r.Answer), "fd00::6")
		// The name exists but has no IPv4 address: NODATA, not NXDOMAIN.
		r = dnsAsk(t, a, "api.service.shoal", dns.TypeA, dns.RcodeSuccess)
		if len(r.Answer) != 0 || !hasSOA(r, "shoal.", 0) {
			t.Errorf("A of an IPv6-only service: %v, want no answer and the SOA", r)
		}
	})
	t.Run("SRV", func(t *testing.T) {
		for _, name := range []string{"web.service.shoal", "_web._tcp.service.shoal"} {
			r := dnsAsk(t, a, name, dns.TypeSRV, dns.RcodeSuccess)
			wantSorted(t, name+" SRV", srvTargets(r),
				"0a000001.addr.shoal.:8001", "0a000002.addr.shoal.:8002", "n1.node.shoal.:8003")
			extra := map[string]string{}
			for _, rr := range r.Extra {
				if rec, ok := rr.(*dns.A); ok {
					extra[rec.Hdr.Name] = rec.A.String()
				}
			}
			want := map[string]string{"0a000001.addr.shoal.": "10.0.0.1", "0a000002.addr.shoal.": "10.0.0.2", "n1.node.shoal.": "127.0.0.1"}
			if fmt.Sprint(extra) != fmt.Sprint(want) {
				t.Errorf("%s additional A records = %v, want %v", name, extra, want)
			}
		}
		// The targets resolve on their own too.
		r := dnsAsk(t, a, "0a000002.addr.shoal", dns.TypeA, dns.RcodeSuccess)
		wantSorted(t, "addr A", answerIPs(r.Answer), "10.0.0.2")
	})
	t.Run("tag filter", func(t *testing.T) {
		r := dnsAsk(t, a, "v2.web.service.shoal", dns.TypeA, dns.RcodeSuccess)
		wantSorted(t, "v2 A", answerIPs(r.Answer), "10.0.0.2", "127.0.0.1")
		r = dnsAsk(t, a, "_web._v2.service.shoal", dns.TypeSRV, dns.RcodeSuccess)
		wantSorted(t, "_web._v2 SRV", srvTargets(r), "0a000002.addr.shoal.:8002", "n1.node.shoal.:8003")
		r = dnsAsk(t, a, "primary.web.service.shoal", dns.TypeSRV, dns.RcodeSuccess)
		wantSorted(t, "primary SRV", srvTargets(r), "0a000001.addr.shoal.:8001")
		dnsAsk(t, a, "v9.web.service.shoal", dns.TypeA, dns.RcodeNameError)
	})
	t.Run("node", func(t *testing.T) {
		r := dnsAsk(t, a, "n1.node.shoal", dns.TypeA, dns.RcodeSuccess)
		wantSorted(t, "node A", answerIPs(r.Answer), "127.0.0.1")
		dnsAsk(t, a, "nobody.node.shoal", dns.TypeA, dns.RcodeNameError)
	})
	t.Run("NXDOMAIN", func(t *testing.T) {
		for _, name := range []string{"nope.service.shoal", "a.b.c.service.shoal", "x.y.shoal", "web.services.shoal"} {
			r := dnsAsk(t, a, name, dns.TypeA, dns.RcodeNameError)
			if !hasSOA(r, "shoal.", 0) {
				t.Errorf("%s: NXDOMAIN without the SOA: %v", name, r)
			}
		}
	})
	t.Run("REFUSED outside the domain", func(t *testing.T) {
		for _, name := range []string{"example.com", "web.service.consul", "shoal.example"} {
			dnsAsk(t, a, name, dns.TypeA, dns.RcodeRefused)
		}
	})
	t.Run("apex SOA", func(t *testing.T) {
		r := dnsAsk(t, a, "shoal", dns.TypeSOA, dns.RcodeSuccess)
		if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA {
			t.Errorf("SOA of the apex: %v", r)
		}
	})
	t.Run("TCP", func(t *testing.T) {
		r := dnsQuery(t, a, "tcp", "web.service.shoal", dns.TypeSRV, 0)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 3 {
			t.Errorf("SRV over TCP: %v", r)
		}
	})
}

func TestDNSOnlyPassingInstances(t *testing.T) {
	as := dnsCluster(t)
	a := as[0]
	webIPs := func() []string {
		return answerIPs(dnsAsk(t, a, "web.service.shoal", dns.TypeA, dns.RcodeSuccess).Answer)
	}
	wantSorted(t, "A with web-4 critical", webIPs(), "10.0.0.1", "10.0.0.2", "127.0.0.1")

	putOK(t, as[0], "/v1/agent/check/pass/ttl-web-4", nil)
	testutil.Wait(t, 5*time.Second, "web-4 answered once passing", func() bool {
		return slices.Contains(webIPs(), "10.0.0.4")
	})
	putOK(t, as[0], "/v1/agent/check/warn/ttl-web-4", nil)
	testutil.Wait(t, 5*time.Second, "web-4 gone while warning", func() bool {
		return !slices.Contains(webIPs(), "10.0.0.4")
	})

	// A failed node takes its instances out of DNS at once.
	as[1].Shutdown()
	testutil.Wait(t, 15*time.Second, "n1's instances gone after it failed", func() bool {
		got := webIPs()
		return slices.Equal(got, []string{"10.0.0.1"})
	})
	dnsAsk(t, a, "v2.web.service.shoal", dns.TypeA, dns.RcodeNameError)
}

func TestDNSShufflesAnswers(t *testing.T) {
	a := startAgent(t, "n0", nil)
	for i := 1; i <= 5; i++ {
		putOK(t, a, "/v1/agent/service/register", map[string]any{
			"ID": fmt.Sprintf("web-%d", i), "Name": "web", "Address": fmt.Sprintf("10.0.0.%d", i), "Port": 80})
	}
	orders := map[string]bool{}
	firsts := map[string]bool{}
	for range 40 {
		r := dnsAsk(t, a, "web.service.shoal", dns.TypeA, dns.RcodeSuccess)
		var order []string
		for _, rr := range r.Answer {
			order = append(order, rr.(*dns.A).A.String())
		}
		if len(order) != 5 {
			t.Fatalf("answer %v, want 5 addresses", order)
		}
		orders[strings.Join(order, ",")] = true
		firsts[order[0]] = true
	}
	// 40 draws of 120 orders: all equal has odds of 120^-39.
	if len(orders) < 2 || len(firsts) < 2 {
		t.Errorf("answers not shuffled: %d distinct orders, %d distinct first addresses", len(orders), len(firsts))
	}
}

func TestDNSTruncatesLargeUDPAnswers(t *testing.T) {
	a := startAgent(t, "n0", nil)
	const n = 60
	for i := range n {
		putOK(t, a, "/v1/agent/service/register", map[string]any{
			"ID": fmt.Sprintf("big-%d", i), "Name": "big", "Address": fmt.Sprintf("10.1.%d.%d", i/200, i%200+1), "Port": 80})
	}
	// 60 A records need about 1 KB: more than plain UDP's 512 bytes.
	r := dnsQuery(t, a, "udp", "big.service.shoal", dns.TypeA, 0)
	if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= n {
		t.Errorf("UDP without EDNS: TC=%v with %d answers, want TC and a part of %d", r.Truncated, len(r.Answer), n)
	}
	r.Compress = true // as it went over the wire
	if b, _ := r.Pack(); len(b) > dns.MinMsgSize {
		t.Errorf("UDP answer of %d bytes, want at most %d", len(b), dns.MinMsgSize)
	}
	r = dnsQuery(t, a, "tcp", "big.service.shoal", dns.TypeA, 0)
	if r.Truncated || len(r.Answer) != n {
		t.Errorf("TCP: TC=%v with %d answers, want all %d", r.Truncated, len(r.Answer), n)
	}
	r = dnsQuery(t, a, "udp", "big.service.shoal", dns.TypeA, 4096)
	if r.Truncated || len(r.Answer) != n || r.IsEdns0() == nil {
		t.Errorf("UDP with EDNS 4096: TC=%v with %d answers (OPT %v), want all %d", r.Truncated, len(r.Answer), r.IsEdns0() != nil, n)
	}
	// SRV with additional records, over plain UDP: still a valid message.
	r = dnsQuery(t, a, "udp", "big.service.shoal", dns.TypeSRV, 0)
	if !r.Truncated || len(r.Answer) == 0 {
		t.Errorf("SRV over UDP: TC=%v with %d answers, want a truncated part", r.Truncated, len(r.Answer))
	}
}

func TestDNSDomainAndTTL(t *testing.T) {
	a := startAgent(t, "n0", func(c *Config) {
		c.Domain = "mesh.example"
		c.DNSTTL = 30 * time.Second
	})
	if a.cfg.Proxy.Domain != "mesh.example" {
		t.Errorf("proxy domain %q, want the agent's domain", a.cfg.Proxy.Domain)
	}
	putOK(t, a, "/v1/agent/service/register", map[string]any{"ID": "web-1", "Name": "web", "Address": "10.0.0.1", "Port": 80})
	r := dnsAsk(t, a, "web.service.mesh.example", dns.TypeA, dns.RcodeSuccess)
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
		t.Errorf("answer %v, want one A record with TTL 30", r.Answer)
	}
	r = dnsAsk(t, a, "nope.service.mesh.example", dns.TypeA, dns.RcodeNameError)
	if !hasSOA(r, "mesh.example.", 30) {
		t.Errorf("NXDOMAIN: want the SOA with TTL 30: %v", r)
	}
	dnsAsk(t, a, "web.service.shoal", dns.TypeA, dns.RcodeRefused)
}

func TestDNSConfig(t *testing.T) {
	a := startAgent(t, "n0", func(c *Config) { c.DNSAddr = "" })
	if a.DNSAddr() != "" {
		t.Errorf("DNS disabled but listening on %s", a.DNSAddr())
	}
	for _, tc := range []struct {
		adjust func(*Config)
		want   string
	}{
		{func(c *Config) { c.DNSAddr = "localhost:8600" }, "dns-addr"},
		{func(c *Config) { c.Domain = "bad domain" }, "domain"},
		{func(c *Config) { c.DNSTTL = -time.Second }, "dns-ttl"},
		{func(c *Config) { c.DNSTTL = 1500 * time.Millisecond }, "dns-ttl"},
	} {
		cfg := TestConfig("n0")
		tc.adjust(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error about %s", err, tc.want)
		}
	}
}

func TestDNSBindFailureFailsStart(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := TestConfig("n0")
	cfg.DNSAddr = taken.LocalAddr().String()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	err = a.Start()
	if err == nil || !strings.HasPrefix(err.Error(), "dns: ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Start with the DNS port taken: %v, want one line starting with \"dns: \"", err)
	}
	t.Logf("Start: %v", err)
}

// TestDigSRV is the acceptance check with the real dig:
// dig @127.0.0.1 -p PORT web.service.shoal SRV.
func TestDigSRV(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig not on PATH: install the Debian package bind9-dnsutils to run this test")
	}
	as := dnsCluster(t)
	_, port, _ := net.SplitHostPort(as[0].DNSAddr())
	out, err := exec.Command(dig, "@127.0.0.1", "-p", port, "web.service.shoal", "SRV", "+time=2", "+tries=1").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v\n%s", err, out)
	}
	text := string(out)
	t.Logf("dig @127.0.0.1 -p %s web.service.shoal SRV:\n%s", port, text)
	if !strings.Contains(text, "status: NOERROR") || !strings.Contains(text, " aa") {
		t.Errorf("dig: want an authoritative NOERROR answer")
	}
	var got []string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 8 && f[0] == "web.service.shoal." && f[3] == "SRV" {
			got = append(got, f[7]+":"+f[6])
		}
	}
	sort.Strings(got)
	wantSorted(t, "dig SRV", got, "0a000001.addr.shoal.:8001", "0a000002.addr.shoal.:8002", "n1.node.shoal.:8003")
	if !strings.Contains(text, "n1.node.shoal.\t\t0\tIN\tA\t127.0.0.1") {
		t.Errorf("dig: want n1.node.shoal's A record in the additional section")
	}

	out, _ = exec.Command(dig, "@127.0.0.1", "-p", port, "nope.service.shoal", "A", "+time=2", "+tries=1").CombinedOutput()
	if !strings.Contains(string(out), "status: NXDOMAIN") {
		t.Errorf("dig nope.service.shoal: want NXDOMAIN:\n%s", out)
	}
}
