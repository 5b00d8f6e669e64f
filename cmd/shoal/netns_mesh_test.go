//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/node/pki"
)

// The node PKI and the mTLS mesh on real processes: three hosts, each an
// agent in a network namespace of its own on one bridge
// (netns_harness_test.go), every agent started with a CA file, a node
// certificate and its key, "web" served by h2's backend and called through
// h1. The load goes through h1's HTTP proxy, whose pooled connections pay
// the mesh handshake once; every tenth request instead opens a connection
// of its own to h1's TCP upstream for "web", so that fresh mesh TLS
// handshakes keep happening while certificates and roots change.

const (
	// meshRPS is the rate of every load.
	meshRPS = 200
	// meshFreshEvery: one request in this many goes through h1's TCP
	// upstream on a new connection, hence a new mesh connection.
	meshFreshEvery = 10
	// meshUpstreamPort is h1's TCP upstream listener for "web".
	meshUpstreamPort = 15002
	// meshCatalogPort is the catalog port, which carries the mesh hop.
	meshCatalogPort = nsGossip + 1
	// meshHold is how many requests the load sends after each change
	// before it is judged: 3 s at meshRPS.
	meshHold = 3 * meshRPS
)

// TestNetnsMesh proves the node PKI's "done when" on three hosts: traffic
// between hosts is TLS (no plaintext HTTP crosses the bridge, which a
// plaintext control shows the counters would see), an agent whose
// certificate comes from another CA is kept out, an agent given another
// node's certificate does not start, and a node certificate rotation and a
// three-step root rotation under load fail no request.
//
// Reproduce: go test -race -count=1 -run TestNetnsMesh -v ./cmd/shoal/ (as root).
func TestNetnsMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the netns mesh scenario in -short mode: it builds shoal and runs agents for a minute")
	}
	nsRequire(t)
	begin := time.Now()
	nsWatchStalls(t)
	nsSweep(t)
	bins := nsBuild(t, t.TempDir())
	s := meshStart(t, bins)
	s.run(t, "TLSBetweenHosts", s.tlsBetweenHosts)
	s.run(t, "Outsiders", s.outsiders)
	s.run(t, "NodeCertRotation", s.nodeCertRotation)
	s.run(t, "RootRotation", s.rootRotation)
	t.Logf("TestNetnsMesh done in %v", time.Since(begin).Round(time.Millisecond))
}

// meshScenario is the shared cluster of the subtests and its certificates.
type meshScenario struct {
	c          *nsCluster
	pki        *meshPKI
	root1      meshCA
	h1, h2, h3 *nsHost
	// nodeCerts is the node certificate each host runs with now.
	nodeCerts map[string]meshNodeCert
	// pooled reaches h1's HTTP proxy on keep-alive connections; fresh
	// opens a connection per request, to h1's TCP upstream.
	pooled, fresh *http.Client
}

// meshStart makes the three hosts with the PKI on, registers "web" on h2
// and waits until both of h1's paths reach it.
func meshStart(t *testing.T, bins nsBins) *meshScenario {
	c := nsNewCluster(t, bins, 0)
	s := &meshScenario{
		c:         c,
		pki:       &meshPKI{shoal: bins.shoal, dir: filepath.Join(c.dir, "pki")},
		nodeCerts: map[string]meshNodeCert{},
		pooled: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second, DisableCompression: true}},
		fresh: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true, DisableCompression: true}},
	}
	t.Cleanup(func() {
		s.pooled.CloseIdleConnections()
	})
	s.root1 = s.pki.ca(t, "root1", "")
	for _, name := range []string{"h1", "h2", "h3"} {
		h := c.addHost(name)
		nc := s.pki.node(t, s.root1, name)
		s.install(t, h, [][]byte{s.root1.certPEM}, &nc)
		h.extra = meshFlags(h)
		if name == "h1" {
			h.extra = append(h.extra, "--upstream", "web="+net.JoinHostPort(h.ip, strconv.Itoa(meshUpstreamPort)))
		}
	}
	s.h1, s.h2, s.h3 = c.host(1), c.host(2), c.host(3)
	for _, h := range c.hosts {
		h.startBackend()
		h.startAgent()
	}
	for _, h := range c.hosts {
		h.waitAPI(60 * time.Second)
	}
	took := c.waitStatuses(60*time.Second, c.hosts, c.allStatus(nsAlive))
	c.logf("3 hosts with the node PKI (root %q) alive everywhere after %v", s.root1.cert.Subject.CommonName, took.Round(time.Millisecond))
	s.h2.register("web-h2", "web", false)
	took = c.waitPassing(s.h1, "web", map[string]bool{"web-h2": true})
	took += nsPoll(t, 15*time.Second, 50*time.Millisecond, "h1's proxy and TCP upstream to reach web on h2", func() (bool, string) {
		for _, fresh := range []bool{false, true} {
			if body, err := s.get(fresh); err != nil || body != "h2" {
				return false, fmt.Sprintf("fresh=%v: %q %v", fresh, body, err)
			}
		}
		return true, ""
	})
	c.logf("web-h2 reachable through h1 %v after its registration", took.Round(time.Millisecond))
	return s
}

// run runs one step as a subtest of the shared cluster; the harness's
// helpers report to the subtest meanwhile.
func (s *meshScenario) run(t *testing.T, name string, f func(*testing.T)) {
	t.Run(name, func(t *testing.T) {
		parent := s.c.t
		s.c.t = t
		defer func() { s.c.t = parent }()
		f(t)
	})
}

func (s *meshScenario) hosts() []*nsHost { return []*nsHost{s.h1, s.h2, s.h3} }

// get sends one request for "web" through h1: its HTTP proxy on a pooled
// connection, or its TCP upstream on a fresh one.
func (s *meshScenario) get(fresh bool) (string, error) {
	client, url, host := s.pooled, s.h1.proxyURL()+"mesh-load", "web"
	if fresh {
		client, host = s.fresh, ""
		url = "http://" + net.JoinHostPort(s.h1.ip, strconv.Itoa(meshUpstreamPort)) + "/mesh-load-fresh"
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return strings.TrimSpace(string(body)), nil
}

// tlsBetweenHosts: requests through h1 to web on h2 succeed while no packet
// between hosts carries plaintext HTTP; a plaintext request from h1 straight
// to h2's backend shows the same counters do count it. h2's leaf of web
// chains to the root.
func (s *meshScenario) tlsBetweenHosts(t *testing.T) {
	c, h1, h2 := s.c, s.h1, s.h2
	s.installCounters(t)
	before := s.counterSnapshot(t)
	load := s.startLoad(t)
	s.hold(t, load, meshHold)
	r, errs, bodies := load.finish()
	after := s.counterSnapshot(t)
	c.logf("RESULT TLS: load %v; served by %v", r, bodies)
	s.checkLoad(t, "TLS between hosts", r, errs, bodies)
	plain, detail := s.plaintext(t)
	catalogPkts := after["h1"]["catalog-out"] - before["h1"]["catalog-out"]
	c.logf("RESULT TLS: plaintext HTTP packets between hosts during the load: %d (%s); h1 sent %d packets to catalog ports",
		plain, detail, catalogPkts)
	if plain != 0 {
		t.Errorf("%d packets with plaintext HTTP crossed between hosts while the PKI is on (%s), want 0", plain, detail)
	}
	if catalogPkts < int64(r.sent/10) {
		t.Errorf("h1 sent only %d packets to catalog ports for %d requests: the traffic did not take the mesh hop", catalogPkts, r.sent)
	}
	out := s.metric(t, h1, "shoal_mesh_connections_total", `direction="out"`)
	in := s.metric(t, h2, "shoal_mesh_connections_total", `direction="in"`)
	fwd := s.metric(t, h2, "shoal_mesh_forwarded_total", `source="node:h1"`, `destination="web"`)
	c.logf("RESULT TLS: mesh connections h1 out %.0f, h2 in %.0f, h2 forwarded node:h1→web %.0f", out, in, fwd)
	if out < float64(r.fresh) || fwd < float64(r.fresh) {
		t.Errorf("mesh connections h1 out %.0f, h2 forwarded %.0f, want at least the %d fresh connections", out, fwd, r.fresh)
	}

	// The control: the same counters see a plaintext request between the
	// same hosts, so the zero above is the mesh's doing.
	ip, port := h2.backendAddr()
	body := nsMust(t, "ip", "netns", "exec", h1.ns, "curl", "-sS", "--max-time", "5",
		"http://"+net.JoinHostPort(ip, strconv.Itoa(port))+"/plaintext-control")
	ctl := s.counterSnapshot(t)
	c.logf("RESULT TLS control: curl from h1 straight to h2's backend (answer %q): h1 GET out %d, h2 GET in %d, h2 HTTP out %d, h1 HTTP in %d packets",
		body, ctl["h1"]["get-out"], ctl["h2"]["get-in"], ctl["h2"]["http-out"], ctl["h1"]["http-in"])
	for _, want := range []struct{ host, counter string }{{"h1", "get-out"}, {"h2", "get-in"}, {"h2", "http-out"}, {"h1", "http-in"}} {
		if ctl[want.host][want.counter] == 0 {
			t.Errorf("the plaintext control left %s's %s counter at 0: the counters cannot see plaintext HTTP", want.host, want.counter)
		}
	}
	// From here on the counters watch the other steps' traffic.
	for _, h := range s.hosts() {
		h.ipt("-Z", "OUTPUT")
		h.ipt("-Z", "INPUT")
	}

	leaf, inter := s.checkLeaf(t, h2, "web", s.nodeCerts["h2"], s.root1)
	c.logf("RESULT TLS: h2's leaf of web %s (valid %s to %s) chains to %q through node CA %q",
		leaf.ServiceURI, leaf.ValidAfter.Format(time.RFC3339), leaf.ValidBefore.Format(time.RFC3339),
		s.root1.cert.Subject.CommonName, inter.Subject.CommonName)
	for _, h := range s.hosts() {
		s.checkRoots(t, h, s.root1, s.root1)
	}
}

// outsiders: an agent with a node certificate of another CA (same trust
// domain, another key) joins and registers web: every host refuses its
// catalog, no request through h1 reaches its backend, and a mesh
// connection with its identity is refused. An agent given another node's
// certificate does not start.
func (s *meshScenario) outsiders(t *testing.T) {
	c, h1 := s.c, s.h1
	td := s.trustDomain(t)
	other := s.pki.ca(t, "other", td)
	out := c.addHost("outsider")
	nc := s.pki.node(t, other, out.name)
	s.install(t, out, [][]byte{other.certPEM}, &nc)
	out.extra = meshFlags(out)

	refused0 := s.metric(t, h1, "shoal_catalog_deltas_refused_total")
	refusedBefore := map[string]float64{}
	for _, h := range s.hosts() {
		refusedBefore[h.name] = s.metric(t, h, "shoal_catalog_deltas_refused_total")
	}
	load := s.startLoad(t)
	out.startBackend()
	out.startAgent()
	out.waitAPI(30 * time.Second)
	joined := nsPoll(t, 30*time.Second, 100*time.Millisecond, "h1 to see the outsider alive", func() (bool, string) {
		m, err := h1.members()
		if err != nil {
			return false, err.Error()
		}
		return m[out.name] == nsAlive, fmt.Sprint(m)
	})
	refusedAtJoin := s.metric(t, h1, "shoal_catalog_deltas_refused_total")
	if refusedAtJoin <= refused0 {
		// Not yet: the outsider's first catalog may still be on its way.
		nsPoll(t, 30*time.Second, 100*time.Millisecond, "h1 to refuse the outsider's catalog", func() (bool, string) {
			v, err := meshMetric(h1, "shoal_catalog_deltas_refused_total")
			refusedAtJoin = v
			return err == nil && v > refused0, fmt.Sprintf("%.0f refused (%v), %.0f before the outsider", v, err, refused0)
		})
	}
	out.register("web-outsider", "web", false)
	registered := time.Now()
	rose := nsPoll(t, 30*time.Second, 100*time.Millisecond, "h1 to refuse the outsider's registration of web", func() (bool, string) {
		v, err := meshMetric(h1, "shoal_catalog_deltas_refused_total")
		return err == nil && v > refusedAtJoin, fmt.Sprintf("%.0f refused (%v), %.0f before the registration", v, err, refusedAtJoin)
	})
	s.hold(t, load, meshHold)
	r, errs, bodies := load.finish()
	refused, _ := meshSeries(h1, "shoal_catalog_deltas_refused_total")
	c.logf("RESULT outsiders: outsider (CA %q, same trust domain %q) alive on h1 %v after its start; h1's refused deltas: %.0f before it, %.0f once it joined, more %v after it registered web; now %v",
		other.cert.Subject.CommonName, td, joined.Round(time.Millisecond), refused0, refusedAtJoin, rose.Round(time.Millisecond), refused)
	c.logf("RESULT outsiders: load %v, %v after the outsider registered web; served by %v", r, time.Since(registered).Round(time.Millisecond), bodies)
	s.checkLoad(t, "outsider", r, errs, bodies)
	if got, err := h1.catalog(); err != nil || got["outsider/web-outsider"] {
		t.Errorf("h1's catalog holds the outsider's web (err %v): %v", err, got)
	}
	if got, err := h1.passing("web"); err != nil || !nsSameSet(got, map[string]bool{"web-h2": true}) {
		t.Errorf("h1's passing web = %v (err %v), want only web-h2", got, err)
	}
	// Not only h1: no host takes the outsider's catalog, every one refuses it.
	for _, h := range s.hosts() {
		v := s.metric(t, h, "shoal_catalog_deltas_refused_total")
		got, err := h.catalog()
		c.logf("RESULT outsiders: %s refused %.0f catalog deltas since the outsider started; holds outsider/web-outsider: %v (%v)",
			h.name, v-refusedBefore[h.name], got["outsider/web-outsider"], err)
		if err != nil || got["outsider/web-outsider"] {
			t.Errorf("%s's catalog holds the outsider's web (err %v): %v", h.name, err, got)
		}
		if v <= refusedBefore[h.name] {
			t.Errorf("%s refused no catalog delta of the outsider (%.0f before, %.0f now)", h.name, refusedBefore[h.name], v)
		}
	}
	// And the outsider's own identity gets no mesh connection through.
	certRefused0 := s.metric(t, s.h2, "shoal_mesh_refused_total", `reason="certificate"`)
	answer := s.meshAsk(t, out, s.h2, "web-h2")
	certRefused := s.metric(t, s.h2, "shoal_mesh_refused_total", `reason="certificate"`)
	c.logf("RESULT outsiders: a mesh connection to h2 with the outsider's node identity was answered %q; h2's certificate refusals %.0f → %.0f",
		answer, certRefused0, certRefused)
	if !strings.HasPrefix(answer, "refused certificate:") || certRefused != certRefused0+1 {
		t.Errorf("h2 answered the outsider's mesh connection %q, refusals %.0f → %.0f; want one refusal for its certificate", answer, certRefused0, certRefused)
	}
	out.signalAgent(syscall.SIGTERM)
	nsPoll(t, 15*time.Second, 50*time.Millisecond, "the outsider to leave and exit", func() (bool, string) {
		return !out.agentProc().running(), "running"
	})

	s.wrongNodeCert(t)
}

// wrongNodeCert starts an agent named h3, on h3, with h2's node
// certificate: it must exit at once, non-zero, with one line on stderr.
func (s *meshScenario) wrongNodeCert(t *testing.T) {
	h3, nc := s.h3, s.nodeCerts["h2"]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h3.ns, s.c.bins.shoal, "agent", "--node", "h3",
		"--bind", net.JoinHostPort(h3.ip, "17946"), "--http-addr", net.JoinHostPort(h3.ip, "18500"),
		"--proxy-addr", "", "--dns-addr", "", "--data-dir", t.TempDir(),
		"--ca-file", filepath.Join(meshDir(h3), "ca.pem"), "--node-cert-file", nc.certFile, "--node-key-file", nc.keyFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	if ctx.Err() != nil {
		t.Fatalf("an agent h3 with h2's node certificate was still running after 30 s: it started.\nstderr:\n%s", meshTail(stderr.String(), 20))
	}
	// The agent may log before it fails (the warning about an API open to
	// the network comes first); the error is what is not a log line.
	var errLines []string
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if !strings.HasPrefix(line, "time=") {
			errLines = append(errLines, line)
		}
	}
	code := cmd.ProcessState.ExitCode()
	s.c.logf("RESULT wrong node certificate: exit code %d after %v (%v); stderr:\n%s",
		code, took.Round(time.Millisecond), err, strings.TrimSpace(stderr.String()))
	if code == 0 {
		t.Errorf("an agent h3 with h2's node certificate exited 0, want non-zero")
	}
	if len(errLines) != 1 || !strings.HasPrefix(errLines[0], "shoal: ") {
		t.Errorf("stderr has %d lines besides log lines, want one error line:\n%s", len(errLines), stderr.String())
	} else if !strings.Contains(errLines[0], `"h2"`) || !strings.Contains(errLines[0], `"h3"`) {
		t.Errorf("the error does not name the certificate's node and the agent's: %s", errLines[0])
	}
	if strings.TrimSpace(stdout.String()) != "" {
		t.Logf("stdout: %s", stdout.String())
	}
}

// nodeCertRotation: under load, h2 gets a new node certificate from the
// same root and a SIGHUP: no request fails, and h2's leaf of web and the
// chain its mesh port serves run through the new node certificate.
func (s *meshScenario) nodeCertRotation(t *testing.T) {
	c, h1, h2 := s.c, s.h1, s.h2
	_, oldInter := s.checkLeaf(t, h2, "web", s.nodeCerts["h2"], s.root1)
	refused0 := s.refusals(t)
	load := s.startLoad(t)
	s.hold(t, load, meshHold)

	nc := s.pki.node(t, s.root1, "h2")
	s.install(t, h2, nil, &nc)
	mark := load.tally()
	conns0 := s.metric(t, h1, "shoal_mesh_connections_total", `direction="out"`)
	h2.signalAgent(syscall.SIGHUP)
	took := nsPoll(t, 10*time.Second, 20*time.Millisecond, "h2's leaf of web to chain through its new node certificate", func() (bool, string) {
		_, certs, err := meshFetchLeaf(h2, "web")
		if err != nil {
			return false, err.Error()
		}
		return len(certs) > 1 && certs[1].Equal(nc.cert), fmt.Sprintf("%d certificates", len(certs))
	})
	s.nodeCerts["h2"] = nc
	s.hold(t, load, meshHold)
	conns1 := s.metric(t, h1, "shoal_mesh_connections_total", `direction="out"`)
	r, errs, bodies := load.finish()
	refused1 := s.refusals(t)
	after := r.since(mark)
	c.logf("RESULT node cert rotation: whole load %v; after the SIGHUP %v; %.0f new mesh connections from h1 after it; new leaf served %v after the SIGHUP",
		r, after, conns1-conns0, took.Round(time.Millisecond))
	s.checkLoad(t, "node certificate rotation", r, errs, bodies)
	if conns1-conns0 < float64(after.fresh)/2 {
		t.Errorf("h1 opened %.0f mesh connections after the rotation for %d fresh requests: the rotation met no new handshake", conns1-conns0, after.fresh)
	}
	s.checkNoRefusals(t, refused0, refused1)

	_, newInter := s.checkLeaf(t, h2, "web", nc, s.root1)
	if newInter.Equal(oldInter) {
		t.Errorf("h2's leaf still chains through the old node certificate (serial %x)", oldInter.SerialNumber)
	}
	served, body := s.meshProbe(t, h2, "web-h2", s.root1)
	c.logf("RESULT node cert rotation: h2's leaf now under node CA serial %x (was %x); a fresh mesh handshake to h2 is served %q under serial %x, answer %q",
		newInter.SerialNumber, oldInter.SerialNumber, served[0].URIs, served[1].SerialNumber, body)
	if !served[1].Equal(nc.cert) {
		t.Errorf("h2's mesh port serves node CA serial %x, want the new one %x", served[1].SerialNumber, nc.cert.SerialNumber)
	}
}

// rootRotation: under load, (a) root 2 joins every CA file, (b) every host
// gets a node certificate from root 2, (c) root 1 leaves every CA file,
// each step reloaded on every host with "shoal reload": no request fails,
// and at the end every host trusts root 2 alone.
func (s *meshScenario) rootRotation(t *testing.T) {
	c := s.c
	td := s.trustDomain(t)
	root2 := s.pki.ca(t, "root2", td)
	refused0 := s.refusals(t)
	load := s.startLoad(t)
	s.hold(t, load, meshHold)
	steps := []struct {
		name   string
		change func(h *nsHost)
		check  func(h *nsHost)
	}{
		{"a: add root 2 to every CA file",
			func(h *nsHost) { s.install(t, h, [][]byte{s.root1.certPEM, root2.certPEM}, nil) },
			func(h *nsHost) { s.checkRoots(t, h, s.root1, s.root1, root2) }},
		{"b: node certificates from root 2",
			func(h *nsHost) {
				nc := s.pki.node(t, root2, h.name)
				s.install(t, h, nil, &nc)
			},
			func(h *nsHost) { s.checkRoots(t, h, root2, s.root1, root2) }},
		{"c: remove root 1 from every CA file",
			func(h *nsHost) { s.install(t, h, [][]byte{root2.certPEM}, nil) },
			func(h *nsHost) { s.checkRoots(t, h, root2, root2) }},
	}
	type stepResult struct {
		took    time.Duration
		load    meshTally
		newConn float64
	}
	var results []stepResult
	for _, st := range steps {
		mark := load.tally()
		conns0 := s.metric(t, s.h1, "shoal_mesh_connections_total", `direction="out"`)
		t0 := time.Now()
		for _, h := range s.hosts() {
			st.change(h)
			nsMust(t, c.bins.shoal, "reload", "--http-addr", net.JoinHostPort(h.ip, strconv.Itoa(nsHTTP)))
		}
		for _, h := range s.hosts() {
			st.check(h)
		}
		took := time.Since(t0)
		s.hold(t, load, meshHold)
		res := stepResult{took: took, load: load.tally().since(mark)}
		res.newConn = s.metric(t, s.h1, "shoal_mesh_connections_total", `direction="out"`) - conns0
		results = append(results, res)
		c.logf("RESULT root rotation step %s: files written and 3 hosts reloaded and checked in %v; load since the step %v; %.0f new mesh connections from h1",
			st.name, took.Round(time.Millisecond), res.load, res.newConn)
	}
	_, inter := s.checkLeaf(t, s.h2, "web", s.nodeCerts["h2"], root2)
	r, errs, bodies := load.finish()
	refused1 := s.refusals(t)
	c.logf("RESULT root rotation: whole load %v; served by %v; h2's leaf of web now under node CA %q of root %q",
		r, bodies, inter.Subject.CommonName, root2.cert.Subject.CommonName)
	s.checkLoad(t, "root rotation", r, errs, bodies)
	for i, res := range results {
		if res.load.failed > 0 {
			t.Errorf("step %s: %d of %d requests failed", steps[i].name, res.load.failed, res.load.sent)
		}
		if res.newConn < float64(res.load.fresh)/2 {
			t.Errorf("step %s: h1 opened %.0f mesh connections for %d fresh requests: the step met no new handshake", steps[i].name, res.newConn, res.load.fresh)
		}
	}
	s.checkNoRefusals(t, refused0, refused1)
	for _, fresh := range []bool{false, true} {
		if body, err := s.get(fresh); err != nil || body != "h2" {
			t.Errorf("after the rotation, a request through h1 (fresh connection %v) got %q, %v", fresh, body, err)
		}
	}
	plain, detail := s.plaintext(t)
	c.logf("RESULT plaintext HTTP packets between hosts since the control (outsider, both rotations): %d (%s)", plain, detail)
	if plain != 0 {
		t.Errorf("%d packets with plaintext HTTP crossed between hosts after the control (%s), want 0", plain, detail)
	}
}

// checkLoad fails the test for any failed request or any answer not h2's.
func (s *meshScenario) checkLoad(t *testing.T, what string, r meshTally, errs []string, bodies map[string]int) {
	t.Helper()
	if r.failed > 0 {
		t.Errorf("%s: %d of %d requests failed, want 0: %q", what, r.failed, r.sent, errs)
	}
	for body, n := range bodies {
		if body != "h2" {
			t.Errorf("%s: %d requests answered %q, want only h2's backend", what, n, body)
		}
	}
	if r.sent < meshHold*9/10 {
		t.Errorf("%s: only %d requests sent: the load did not run", what, r.sent)
	}
}

// refusals sums, per host, the refused catalog deltas and mesh connections.
func (s *meshScenario) refusals(t *testing.T) map[string][2]float64 {
	out := map[string][2]float64{}
	for _, h := range s.hosts() {
		out[h.name] = [2]float64{s.metric(t, h, "shoal_catalog_deltas_refused_total"), s.metric(t, h, "shoal_mesh_refused_total")}
	}
	return out
}

// checkNoRefusals fails the test if a host refused a delta or a mesh
// connection between two refusals snapshots: a correct rotation gives no
// agent a reason to.
func (s *meshScenario) checkNoRefusals(t *testing.T, before, after map[string][2]float64) {
	t.Helper()
	for _, h := range s.hosts() {
		d, m := after[h.name][0]-before[h.name][0], after[h.name][1]-before[h.name][1]
		if d != 0 || m != 0 {
			deltas, _ := meshSeries(h, "shoal_catalog_deltas_refused_total")
			mesh, _ := meshSeries(h, "shoal_mesh_refused_total")
			t.Errorf("%s refused %.0f catalog deltas and %.0f mesh connections meanwhile, want 0: %v %v", h.name, d, m, deltas, mesh)
		}
	}
}

// trustDomain is the trust domain h1's roots endpoint reports.
func (s *meshScenario) trustDomain(t *testing.T) string {
	var roots meshRoots
	if err := s.h1.getJSON("/v1/agent/connect/ca/roots", &roots); err != nil {
		t.Fatal(err)
	}
	if roots.TrustDomain == "" {
		t.Fatalf("h1's roots endpoint names no trust domain: %+v", roots)
	}
	return roots.TrustDomain
}

// hold waits until the load sent n more requests.
func (s *meshScenario) hold(t *testing.T, l *meshLoad, n int) {
	t.Helper()
	target := l.tally().sent + n
	nsPoll(t, time.Duration(n/meshRPS)*time.Second+30*time.Second, 20*time.Millisecond, fmt.Sprintf("%d more requests of load", n), func() (bool, string) {
		got := l.tally()
		return got.sent >= target, fmt.Sprint(got)
	})
}

// Certificates.

// meshPKI makes certificates as an operator does, with "shoal tls", each
// set in a directory of its own (the command never overwrites a file).
type meshPKI struct {
	shoal string
	dir   string
	made  int // node certificates made, for their directories' names
}

// meshCA is a root CA on disk.
type meshCA struct {
	name              string
	certFile, keyFile string
	certPEM           []byte
	cert              *x509.Certificate
}

// meshNodeCert is a node certificate and its key on disk.
type meshNodeCert struct {
	certFile, keyFile string
	cert              *x509.Certificate
}

// ca creates root CA name; trustDomain "" lets the command pick one.
func (p *meshPKI) ca(t *testing.T, name, trustDomain string) meshCA {
	t.Helper()
	dir := p.mkdir(t, name)
	args := []string{p.shoal, "tls", "ca", "create", "--days", "2", "--dir", dir}
	if trustDomain != "" {
		args = append(args, "--trust-domain", trustDomain)
	}
	nsMust(t, args...)
	ca := meshCA{name: name, certFile: filepath.Join(dir, "shoal-agent-ca.pem"), keyFile: filepath.Join(dir, "shoal-agent-ca-key.pem")}
	ca.certPEM, ca.cert = meshReadCert(t, ca.certFile)
	return ca
}

// node issues a node certificate for node from ca.
func (p *meshPKI) node(t *testing.T, ca meshCA, node string) meshNodeCert {
	t.Helper()
	p.made++
	dir := p.mkdir(t, fmt.Sprintf("%s-%s-%d", ca.name, node, p.made))
	nsMust(t, p.shoal, "tls", "node", "create", "--node", node, "--ca-cert", ca.certFile, "--ca-key", ca.keyFile,
		"--days", "1", "--dir", dir)
	nc := meshNodeCert{certFile: filepath.Join(dir, "shoal-node-"+node+".pem"), keyFile: filepath.Join(dir, "shoal-node-"+node+"-key.pem")}
	_, nc.cert = meshReadCert(t, nc.certFile)
	return nc
}

func (p *meshPKI) mkdir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(p.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// meshDir holds the PKI files a host's agent runs with.
func meshDir(h *nsHost) string { return filepath.Join(h.c.dir, h.name+"-pki") }

// meshFlags are the agent flags that turn the host's PKI on.
func meshFlags(h *nsHost) []string {
	d := meshDir(h)
	return []string{"--ca-file", filepath.Join(d, "ca.pem"),
		"--node-cert-file", filepath.Join(d, "node.pem"), "--node-key-file", filepath.Join(d, "node-key.pem")}
}

// install writes the host's CA file from roots (unless nil) and copies nc
// (unless nil) over its node certificate and key, as an operator does
// before a reload.
func (s *meshScenario) install(t *testing.T, h *nsHost, roots [][]byte, nc *meshNodeCert) {
	t.Helper()
	d := meshDir(h)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if roots != nil {
		meshWriteFile(t, filepath.Join(d, "ca.pem"), bytes.Join(roots, nil))
	}
	if nc != nil {
		for src, dst := range map[string]string{nc.certFile: "node.pem", nc.keyFile: "node-key.pem"} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			meshWriteFile(t, filepath.Join(d, dst), b)
		}
		s.nodeCerts[h.name] = *nc
	}
}

// meshWriteFile replaces path with data in one rename.
func meshWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// meshReadCert reads the first certificate of a PEM file.
func meshReadCert(t *testing.T, path string) ([]byte, *x509.Certificate) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertificates(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b, certs[0]
}

// The identity endpoints, decoded into the field names of Consul's API.

type meshRoots struct {
	ActiveRootID string
	TrustDomain  string
	Roots        []struct {
		ID       string
		RootCert string
		Active   bool
	}
}

type meshLeaf struct {
	CertPEM, PrivateKeyPEM  string
	Service, ServiceURI     string
	ValidAfter, ValidBefore time.Time
	ModifyIndex             uint64
}

// meshFetchLeaf returns h's leaf of service and its parsed chain.
func meshFetchLeaf(h *nsHost, service string) (meshLeaf, []*x509.Certificate, error) {
	var l meshLeaf
	if err := h.getJSON("/v1/agent/connect/ca/leaf/"+service, &l); err != nil {
		return l, nil, err
	}
	certs, err := pki.ParseCertificates([]byte(l.CertPEM))
	if err != nil {
		return l, nil, fmt.Errorf("%s's leaf of %s: CertPEM: %w", h.name, service, err)
	}
	return l, certs, nil
}

// checkLeaf checks h's leaf of service: the leaf then node's certificate,
// chaining to root, its key, its identity; it returns the leaf and the
// intermediate.
func (s *meshScenario) checkLeaf(t *testing.T, h *nsHost, service string, node meshNodeCert, root meshCA) (meshLeaf, *x509.Certificate) {
	t.Helper()
	l, certs, err := meshFetchLeaf(h, service)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 {
		t.Fatalf("%s's leaf of %s has %d certificates, want the leaf and the node CA", h.name, service, len(certs))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.cert)
	inter.AddCert(certs[1])
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("%s's leaf of %s does not chain to root %q: %v", h.name, service, root.cert.Subject.CommonName, err)
	}
	if !certs[1].Equal(node.cert) {
		t.Errorf("%s's leaf of %s chains through node CA serial %x, want %x (%s)", h.name, service, certs[1].SerialNumber, node.cert.SerialNumber, node.certFile)
	}
	if _, err := tls.X509KeyPair([]byte(l.CertPEM), []byte(l.PrivateKeyPEM)); err != nil {
		t.Errorf("%s's leaf of %s: PrivateKeyPEM is not the certificate's key: %v", h.name, service, err)
	}
	if l.Service != service || len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != l.ServiceURI {
		t.Errorf("%s's leaf of %s: Service %q, ServiceURI %q, certificate URIs %v", h.name, service, l.Service, l.ServiceURI, certs[0].URIs)
	}
	return l, certs[1]
}

// checkRoots checks that h's roots endpoint lists exactly roots, with
// active the one its node certificate chains to.
func (s *meshScenario) checkRoots(t *testing.T, h *nsHost, active meshCA, roots ...meshCA) {
	t.Helper()
	var got meshRoots
	if err := h.getJSON("/v1/agent/connect/ca/roots", &got); err != nil {
		t.Fatal(err)
	}
	var desc []string
	ok := len(got.Roots) == len(roots)
	for i, r := range got.Roots {
		certs, err := pki.ParseCertificates([]byte(r.RootCert))
		if err != nil {
			t.Fatalf("%s's root %s: %v", h.name, r.ID, err)
		}
		desc = append(desc, fmt.Sprintf("%q active=%v", certs[0].Subject.CommonName, r.Active))
		if i < len(roots) {
			isActive := certs[0].Equal(active.cert)
			ok = ok && certs[0].Equal(roots[i].cert) && r.Active == isActive && (r.ID == got.ActiveRootID) == isActive
		}
	}
	if !ok {
		var want []string
		for _, r := range roots {
			want = append(want, fmt.Sprintf("%q active=%v", r.cert.Subject.CommonName, r.cert.Equal(active.cert)))
		}
		t.Errorf("%s's roots endpoint lists %v (active %s), want %v", h.name, desc, got.ActiveRootID, want)
	}
}

// meshProbe opens a mesh connection to via's catalog port as h1's node
// would, with a fresh full handshake, asks for serviceID and sends one
// request: it returns the chain via's agent served (checked against root)
// and the instance's answer.
func (s *meshScenario) meshProbe(t *testing.T, via *nsHost, serviceID string, root meshCA) ([]*x509.Certificate, string) {
	t.Helper()
	d := meshDir(s.h1)
	b, err := pki.LoadBundle(filepath.Join(d, "ca.pem"), filepath.Join(d, "node.pem"), filepath.Join(d, "node-key.pem"), "h1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := b.IssueLeaf("", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{"shoal-mesh/1"},
		Certificates:       []tls.Certificate{leaf.Cert},
		InsecureSkipVerify: true, // checked below, against root
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp",
		net.JoinHostPort(via.ip, strconv.Itoa(meshCatalogPort)), cfg)
	if err != nil {
		t.Fatalf("mesh handshake with %s: %v", via.name, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	served := conn.ConnectionState().PeerCertificates
	if len(served) != 2 {
		t.Fatalf("%s's mesh port served %d certificates, want the leaf and the node CA", via.name, len(served))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.cert)
	inter.AddCert(served[1])
	if _, err := served[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("%s's mesh port serves a chain that does not verify against %q: %v", via.name, root.cert.Subject.CommonName, err)
	}
	fmt.Fprintf(conn, "shoal-mesh/1 %s\nGET /mesh-probe HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n", serviceID)
	br := bufio.NewReader(conn)
	reply, err := br.ReadString('\n')
	if err != nil || reply != "ok\n" {
		t.Fatalf("%s's agent answered the preamble %q (%v), want ok", via.name, reply, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("through %s's mesh port: %v", via.name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return served, strings.TrimSpace(string(body))
}

// meshAsk opens a mesh connection to via's catalog port with from's node
// identity (its own CA file and node certificate), asks for serviceID and
// returns via's one-line answer: "ok", or the refusal and its reason.
func (s *meshScenario) meshAsk(t *testing.T, from, via *nsHost, serviceID string) string {
	t.Helper()
	d := meshDir(from)
	b, err := pki.LoadBundle(filepath.Join(d, "ca.pem"), filepath.Join(d, "node.pem"), filepath.Join(d, "node-key.pem"), from.name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := b.IssueLeaf("", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp",
		net.JoinHostPort(via.ip, strconv.Itoa(meshCatalogPort)), &tls.Config{
			MinVersion: tls.VersionTLS13, NextProtos: []string{"shoal-mesh/1"},
			Certificates:       []tls.Certificate{leaf.Cert},
			InsecureSkipVerify: true, // what via serves is not the question here
		})
	if err != nil {
		t.Fatalf("mesh handshake with %s as %s: %v", via.name, from.name, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "shoal-mesh/1 %s\n", serviceID)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && line == "" {
		return "closed: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// Plaintext counters: rules in every host's namespace that count, and let
// through, packets between hosts (the controller's excluded) that carry an
// HTTP request line or status line, and packets to catalog ports.

type meshCounterRule struct {
	name  string // counter name, also the rule's comment
	chain string
	args  []string
}

func meshCounterRules(ctrlIP string) []meshCounterRule {
	out := []string{"-o", "eth0", "!", "-d", ctrlIP}
	in := []string{"-i", "eth0", "!", "-s", ctrlIP}
	str := func(s string) []string { return []string{"-m", "string", "--algo", "bm", "--string", s} }
	cat := func(a ...[]string) []string {
		var r []string
		for _, x := range a {
			r = append(r, x...)
		}
		return r
	}
	return []meshCounterRule{
		{"get-out", "OUTPUT", cat(out, str("GET /"))},
		{"http-out", "OUTPUT", cat(out, str("HTTP/1."))},
		{"get-in", "INPUT", cat(in, str("GET /"))},
		{"http-in", "INPUT", cat(in, str("HTTP/1."))},
		{"catalog-out", "OUTPUT", cat(out, []string{"-p", "tcp", "--dport", strconv.Itoa(meshCatalogPort)})},
	}
}

// meshPlainCounters are the counters that must stay 0 with the PKI on.
var meshPlainCounters = []string{"get-out", "http-out", "get-in", "http-in"}

func (s *meshScenario) installCounters(t *testing.T) {
	for _, h := range s.hosts() {
		for _, r := range meshCounterRules(s.c.ctrlIP) {
			h.ipt(append(append([]string{"-A", r.chain}, r.args...), "-m", "comment", "--comment", "shoal-mesh-"+r.name)...)
		}
	}
}

// counterSnapshot reads every host's counters: host → counter → packets.
func (s *meshScenario) counterSnapshot(t *testing.T) map[string]map[string]int64 {
	t.Helper()
	out := map[string]map[string]int64{}
	for _, h := range s.hosts() {
		out[h.name] = map[string]int64{}
		for _, chain := range []string{"INPUT", "OUTPUT"} {
			list := nsMust(t, "ip", "netns", "exec", h.ns, "iptables", "-w", "-L", chain, "-v", "-n", "-x")
			for _, line := range strings.Split(list, "\n") {
				f := strings.Fields(line)
				i := strings.Index(line, "/* shoal-mesh-")
				if i < 0 || len(f) < 2 {
					continue
				}
				name := strings.TrimSuffix(strings.TrimSpace(line[i+len("/* shoal-mesh-"):]), " */")
				pkts, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					t.Fatalf("%s: iptables line %q: %v", h.name, line, err)
				}
				out[h.name][name] = pkts
			}
		}
		for _, r := range meshCounterRules(s.c.ctrlIP) {
			if _, ok := out[h.name][r.name]; !ok {
				t.Fatalf("%s: counter %s missing from iptables -L", h.name, r.name)
			}
		}
	}
	return out
}

// plaintext sums the plaintext counters of every host.
func (s *meshScenario) plaintext(t *testing.T) (int64, string) {
	t.Helper()
	snap := s.counterSnapshot(t)
	var total int64
	var parts []string
	for _, h := range s.hosts() {
		for _, name := range meshPlainCounters {
			total += snap[h.name][name]
			parts = append(parts, fmt.Sprintf("%s %s %d", h.name, name, snap[h.name][name]))
		}
	}
	return total, strings.Join(parts, ", ")
}

// Metrics.

// meshSeries returns the samples of metric name on h's /metrics, by series.
func meshSeries(h *nsHost, name string) (map[string]float64, error) {
	resp, err := h.c.client.Get(h.apiURL() + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s GET /metrics: %s", h.name, resp.Status)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: metric line %q: %v", h.name, line, err)
		}
		out[series] = v
	}
	return out, nil
}

// meshMetric sums the samples of metric name on h whose labels include
// every one of labels (`key="value"`).
func meshMetric(h *nsHost, name string, labels ...string) (float64, error) {
	series, err := meshSeries(h, name)
	if err != nil {
		return 0, err
	}
	var sum float64
next:
	for s, v := range series {
		for _, l := range labels {
			if !strings.Contains(s, l) {
				continue next
			}
		}
		sum += v
	}
	return sum, nil
}

func (s *meshScenario) metric(t *testing.T, h *nsHost, name string, labels ...string) float64 {
	t.Helper()
	v, err := meshMetric(h, name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Load.

// meshLoad is an open-loop load of meshRPS GETs per second for "web"
// through h1, every meshFreshEvery-th on a fresh connection to its TCP
// upstream, with every failure counted.
type meshLoad struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	begin    time.Time

	mu     sync.Mutex // guards the fields below
	sent   int
	fresh  int
	failed int
	errs   []string
	bodies map[string]int
	end    time.Time
}

// meshTally is what a load did up to a moment, or between two.
type meshTally struct {
	span                time.Duration
	sent, fresh, failed int
}

func (a meshTally) since(b meshTally) meshTally {
	return meshTally{a.span - b.span, a.sent - b.sent, a.fresh - b.fresh, a.failed - b.failed}
}

func (a meshTally) String() string {
	return fmt.Sprintf("%d sent in %v (%.0f/s, %d on fresh connections), %d failed",
		a.sent, a.span.Round(time.Millisecond), float64(a.sent)/a.span.Seconds(), a.fresh, a.failed)
}

// startLoad starts the load; it stops at finish or when the test ends.
func (s *meshScenario) startLoad(t *testing.T) *meshLoad {
	l := &meshLoad{stop: make(chan struct{}), done: make(chan struct{}), bodies: map[string]int{}, begin: time.Now()}
	t.Cleanup(func() { l.finish() })
	one := func(fresh bool) {
		t0 := time.Now()
		body, err := s.get(fresh)
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			l.failed++
			if len(l.errs) < 10 {
				l.errs = append(l.errs, fmt.Sprintf("%.2fs fresh=%v: %v", t0.Sub(l.begin).Seconds(), fresh, err))
			}
			return
		}
		l.bodies[body]++
	}
	go func() {
		defer close(l.done)
		end := nsPace(l.begin, meshRPS, l.stop, func(i int) {
			fresh := i%meshFreshEvery == meshFreshEvery-1
			l.mu.Lock()
			l.sent++
			if fresh {
				l.fresh++
			}
			l.mu.Unlock()
			one(fresh)
		})
		l.mu.Lock()
		l.end = end
		l.mu.Unlock()
	}()
	return l
}

// tally is what the load did so far (requests in flight count as sent,
// not failed).
func (l *meshLoad) tally() meshTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	return meshTally{time.Since(l.begin), l.sent, l.fresh, l.failed}
}

// finish stops the load, waits for the requests in flight and sums up.
func (l *meshLoad) finish() (meshTally, []string, map[string]int) {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return meshTally{l.end.Sub(l.begin), l.sent, l.fresh, l.failed}, l.errs, l.bodies
}

// meshTail returns the last n lines of s.
func meshTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
