package node

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/shoal-mesh/shoal/node/pki"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// testPKI is an offline root and the files of the nodes it signed.
type testPKI struct {
	t             testing.TB
	dir           string
	caFile        string
	caCert, caKey []byte
	trustDomain   string
}

func newTestPKI(t testing.TB, trustDomain string) *testPKI {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := pki.CreateCA(trustDomain, 72*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: dir, caFile: filepath.Join(dir, "ca.pem"), caCert: cert, caKey: key, trustDomain: trustDomain}
	writeFile(t, p.caFile, cert)
	return p
}

// node signs a node certificate for name and returns its files.
func (p *testPKI) node(name string) (certFile, keyFile string) {
	p.t.Helper()
	cert, key, err := pki.CreateNodeCA(p.caCert, p.caKey, name, 48*time.Hour, time.Now())
	if err != nil {
		p.t.Fatal(err)
	}
	certFile = filepath.Join(p.t.TempDir(), name+".pem")
	keyFile = filepath.Join(filepath.Dir(certFile), name+"-key.pem")
	writeFile(p.t, certFile, cert)
	writeFile(p.t, keyFile, key)
	return certFile, keyFile
}

// configure turns the PKI on for an agent named name.
func (p *testPKI) configure(c *Config, name string) {
	c.CAFile = p.caFile
	c.NodeCertFile, c.NodeKeyFile = p.node(name)
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startMesh starts n agents with the PKI on, joined.
func startMesh(t *testing.T, p *testPKI, n int) []*Agent {
	t.Helper()
	return startAgentsWith(t, n, func(i int, c *Config) { p.configure(c, fmt.Sprintf("n%d", i)) })
}

// backend is an HTTP server that says who it is.
func backend(t *testing.T, name string) (*httptest.Server, int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().(*net.TCPAddr).Port
}

func registerDef(t *testing.T, a *Agent, def map[string]any) {
	t.Helper()
	if code, body := do(t, a, "PUT", "/v1/agent/service/register", def); code != http.StatusOK {
		t.Fatalf("register %v on %s: %d %s", def["ID"], a.NodeName(), code, body)
	}
}

// proxyGet sends one request for service through a's proxy.
func proxyGet(client *http.Client, a *Agent, service, path string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://"+a.Proxy().HTTPAddr()+path, nil)
	req.Host = service
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func visibleOn(t *testing.T, a *Agent, service string, n int) func() bool {
	return func() bool { return len(a.Cluster().Catalog().Instances(service)) == n }
}

func TestMeshCarriesTrafficBetweenNodes(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	as := startMesh(t, p, 3)
	_, port := backend(t, "web-on-n1")
	registerDef(t, as[1], map[string]any{"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": port})
	_, lport := backend(t, "local-on-n0")
	registerDef(t, as[0], map[string]any{"ID": "local-1", "Name": "local", "Address": "127.0.0.1", "Port": lport})
	testutil.Wait(t, 5*time.Second, "web and local seen by n0", func() bool {
		return visibleOn(t, as[0], "web", 1)() && visibleOn(t, as[0], "local", 1)()
	})

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	for i := range 50 {
		code, body, err := proxyGet(client, as[0], "web", fmt.Sprintf("/r%d", i))
		if err != nil || code != http.StatusOK || body != fmt.Sprintf("web-on-n1 /r%d", i) {
			t.Fatalf("request %d through the mesh: %d %q %v", i, code, body, err)
		}
	}
	if in := as[1].mesh.accepted.Load(); in == 0 || in > 4 {
		t.Errorf("n1 accepted %d mesh connections for 50 sequential requests: want 1-4 (kept alive)", in)
	}
	if n := as[1].mesh.forwarded.snapshot()[[2]string{"node:n0", "web"}]; n == 0 {
		t.Errorf("n1 forwarded nothing from n0's node identity: %v", as[1].mesh.forwarded.snapshot())
	}
	if out := as[0].mesh.dialed.Load(); out == 0 {
		t.Error("n0 opened no mesh connection: the request went straight to the instance")
	}

	// An instance on the caller's own node is reached directly.
	dialed := as[0].mesh.dialed.Load()
	for range 5 {
		if code, body, err := proxyGet(client, as[0], "local", "/"); err != nil || code != http.StatusOK || body != "local-on-n0 /" {
			t.Fatalf("local request: %d %q %v", code, body, err)
		}
	}
	if got := as[0].mesh.dialed.Load(); got != dialed {
		t.Errorf("a local instance cost %d mesh dials", got-dialed)
	}

	// The catalog is signed: nothing was refused among honest agents.
	for _, a := range as {
		for reason, n := range a.Cluster().Stats().Refused {
			if n != 0 {
				t.Errorf("%s refused %d honest deltas (%s)", a.NodeName(), n, reason)
			}
		}
	}
}

// TestMeshRefusesOutsiders: an agent whose certificate comes from another
// CA shares the gossip cluster (no gossip key here) but gets no traffic and
// publishes into no one's catalog; a connection with a foreign leaf is
// refused with its reason, logged and counted.
func TestMeshRefusesOutsiders(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	as := startMesh(t, p, 2)
	other := newTestPKI(t, "mesh.test") // same trust domain, another root
	evil := startAgent(t, "evil", func(c *Config) {
		other.configure(c, "evil")
		c.Join = []string{as[0].Cluster().LocalMember().GossipAddr()}
	})
	_, port := backend(t, "evil-web")
	registerDef(t, evil, map[string]any{"ID": "web-evil", "Name": "web", "Address": "127.0.0.1", "Port": port})
	testutil.Wait(t, 10*time.Second, "the outsider's deltas refused", func() bool {
		return as[0].Cluster().Stats().Refused["signature"] > 0
	})
	if n := len(as[0].Cluster().Catalog().Instances("web")); n != 0 {
		t.Fatalf("n0 holds %d web instances published by the outsider", n)
	}

	// A direct connection with the outsider's leaf to n1's mesh port.
	_, wport := backend(t, "web-on-n1")
	registerDef(t, as[1], map[string]any{"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": wport})
	before := as[1].mesh.refused.snapshot()[refusedCertificate]
	reply := meshDialRaw(t, evil.ids.leaf("").Cert, as[1].Cluster().RPCAddr(), "web-1")
	if !strings.HasPrefix(reply, "refused certificate:") {
		t.Errorf("a foreign certificate was answered %q", reply)
	}
	if got := as[1].mesh.refused.snapshot()[refusedCertificate]; got != before+1 {
		t.Errorf("certificate refusals went %d → %d", before, got)
	}
	// An honest node identity asking for an instance n1 does not have.
	if reply := meshDialRaw(t, as[0].ids.leaf("").Cert, as[1].Cluster().RPCAddr(), "nope"); !strings.HasPrefix(reply, "refused instance_not_local:") {
		t.Errorf("a request for another node's instance was answered %q", reply)
	}
	// A service identity of a service its node does not host.
	leaf, err := as[0].ids.Bundle().IssueLeaf("ghost", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if reply := meshDialRaw(t, leaf.Cert, as[1].Cluster().RPCAddr(), "web-1"); !strings.HasPrefix(reply, "refused service_not_on_node:") {
		t.Errorf("an identity of an unregistered service was answered %q", reply)
	}
	// Plaintext to the mesh (not a catalog frame either) is dropped.
	conn, err := net.DialTimeout("tcp", as[1].Cluster().RPCAddr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	if b, _ := io.ReadAll(conn); len(b) != 0 {
		t.Errorf("plaintext HTTP to the catalog port was answered %q", b)
	}
	// And the honest path still works.
	if code, body, err := proxyGet(http.DefaultClient, as[0], "web", "/"); err != nil || code != 200 || body != "web-on-n1 /" {
		t.Errorf("honest request: %d %q %v", code, body, err)
	}
}

// meshDialRaw opens a mesh connection presenting cert, asks for serviceID
// and returns the agent's one-line answer.
func meshDialRaw(t *testing.T, cert tls.Certificate, addr, serviceID string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{meshALPN}, InsecureSkipVerify: true,
		Certificates: []tls.Certificate{cert},
	})
	if err != nil {
		t.Fatalf("mesh handshake: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "%s %s\n", meshALPN, serviceID)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("mesh answer: %v", err)
	}
	return strings.TrimSpace(line)
}

func TestMeshAgentRefusesABadNodeCertificate(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	other := newTestPKI(t, "other.test")
	otherCert, otherKey := other.node("n0")
	wrongCert, wrongKey := p.node("someone-else")
	for name, files := range map[string][3]string{
		"another CA":      {p.caFile, otherCert, otherKey},
		"another node":    {p.caFile, wrongCert, wrongKey},
		"key of another":  {p.caFile, wrongCert, otherKey},
		"missing CA file": {filepath.Join(t.TempDir(), "none.pem"), wrongCert, wrongKey},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := TestConfig("n0")
			cfg.CAFile, cfg.NodeCertFile, cfg.NodeKeyFile = files[0], files[1], files[2]
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = a.Start()
			a.Shutdown()
			if err == nil {
				t.Fatal("the agent started")
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "node PKI:") {
				t.Errorf("error %q: want one line starting with \"node PKI:\"", msg)
			}
		})
	}
}

// TestConnectCAEndpoints reads the roots and a leaf through Consul's own
// client, and checks the leaf chains to the root.
func TestConnectCAEndpoints(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	a := startMesh(t, p, 1)[0]
	_, port := backend(t, "web")
	registerDef(t, a, map[string]any{"ID": "web-1", "Name": "web", "Port": port})
	c, err := consul.NewClient(&consul.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	if roots.TrustDomain != "mesh.test" || len(roots.Roots) != 1 || !roots.Roots[0].Active || roots.ActiveRootID != roots.Roots[0].ID {
		t.Fatalf("roots %+v", roots)
	}
	leaf, meta, err := c.Agent().ConnectCALeaf("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Service != "web" || leaf.ServiceURI != "spiffe://n0.mesh.test/svc/web" {
		t.Errorf("leaf for %q, %q", leaf.Service, leaf.ServiceURI)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(roots.Roots[0].RootCertPEM))
	chain := parsePEMCerts(t, leaf.CertPEM)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the leaf does not chain to the root: %v", err)
	}
	if _, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM)); err != nil {
		t.Errorf("leaf certificate and key: %v", err)
	}
	if time.Until(leaf.ValidBefore) > 25*time.Hour || time.Until(leaf.ValidBefore) < 23*time.Hour {
		t.Errorf("leaf valid until %v: want about 24h", leaf.ValidBefore)
	}

	// A blocking query returns when the leaf is renewed (here: by a reload).
	done := make(chan *consul.LeafCert, 1)
	go func() {
		l, _, err := c.Agent().ConnectCALeaf("web", &consul.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- l
	}()
	time.Sleep(50 * time.Millisecond) // let the query block; a miss only makes it return at once
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-done:
		if l == nil || l.SerialNumber == leaf.SerialNumber || l.ModifyIndex <= leaf.ModifyIndex {
			t.Errorf("the blocking query returned the old leaf")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the blocking leaf query did not return after a renewal")
	}

	if code, body := do(t, a, "GET", "/v1/agent/connect/ca/leaf/nope", nil); code != http.StatusNotFound {
		t.Errorf("leaf of an unregistered service: %d %s", code, body)
	}
	if code, body := do(t, a, "GET", "/v1/agent/connect/ca/leaf/web?index=x", nil); code != http.StatusBadRequest {
		t.Errorf("bad index: %d %s", code, body)
	}
}

func TestConnectCAEndpointsWithoutPKI(t *testing.T) {
	a := startAgent(t, "plain", nil)
	for _, path := range []string{"/v1/agent/connect/ca/roots", "/v1/agent/connect/ca/leaf/web"} {
		if code, body := do(t, a, "GET", path, nil); code != http.StatusNotImplemented || !strings.Contains(string(body), "--ca-file") {
			t.Errorf("%s without a PKI: %d %s", path, code, body)
		}
	}
	if code, body := do(t, a, "PUT", "/v1/agent/reload", nil); code != http.StatusOK {
		t.Errorf("reload without a PKI: %d %s", code, body)
	}
}

func parsePEMCerts(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) < 2 {
		t.Fatalf("CertPEM holds %d certificates: want the leaf and the node's", len(out))
	}
	return out
}

// TestMeshNodeCertificateRotation replaces n1's node certificate while
// requests run through the mesh to it: none fails, and afterwards n1
// presents leaves signed by the new certificate.
func TestMeshNodeCertificateRotation(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	var files [2][2]string
	as := startAgentsWith(t, 2, func(i int, c *Config) {
		p.configure(c, fmt.Sprintf("n%d", i))
		files[i] = [2]string{c.NodeCertFile, c.NodeKeyFile}
	})
	_, port := backend(t, "web-on-n1")
	registerDef(t, as[1], map[string]any{"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": port})
	testutil.Wait(t, 5*time.Second, "web on n0", visibleOn(t, as[0], "web", 1))

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{}}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if code, _, err := proxyGet(client, as[0], "web", "/"); err != nil || code != http.StatusOK {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				client.Transport.(*http.Transport).CloseIdleConnections() // new connections: new handshakes
			}
		})
	}
	testutil.Wait(t, 5*time.Second, "traffic flowing", func() bool { return ok.Load() > 50 })
	oldSigner := as[1].ids.Bundle().NodeCert
	cert, key := p.node("n1")
	copyFile(t, cert, files[1][0])
	copyFile(t, key, files[1][1])
	if err := as[1].Reload(); err != nil {
		t.Fatal(err)
	}
	n := ok.Load()
	testutil.Wait(t, 5*time.Second, "traffic after the rotation", func() bool { return ok.Load() > n+100 })
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed during the rotation", f, f+ok.Load())
	}
	if as[1].ids.Bundle().NodeCert.Equal(oldSigner) {
		t.Fatal("the reload kept the old node certificate")
	}
	if err := as[1].ids.leaf("").Cert.Leaf.CheckSignatureFrom(as[1].ids.Bundle().NodeCert); err != nil {
		t.Errorf("the node leaf is not signed by the new node certificate: %v", err)
	}
	// A reload with a broken file changes nothing.
	writeFile(t, files[1][0], []byte("garbage"))
	if err := as[1].Reload(); err == nil {
		t.Error("a reload with a broken certificate file succeeded")
	}
	if code, _, err := proxyGet(http.DefaultClient, as[0], "web", "/"); err != nil || code != 200 {
		t.Errorf("after a refused reload: %d %v", code, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, b)
}

// TestSidecarUpstreamCarriesServiceIdentity registers a service with a
// Consul-style sidecar upstream: its local listener reaches the
// destination on another node through the mesh, presenting the service's
// own identity, and it closes with the registration.
func TestSidecarUpstreamCarriesServiceIdentity(t *testing.T) {
	p := newTestPKI(t, "mesh.test")
	as := startMesh(t, p, 2)
	_, port := backend(t, "web-on-n1")
	registerDef(t, as[1], map[string]any{"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": port})
	up := testutil.FreePort(t)
	registerDef(t, as[0], map[string]any{"ID": "api-1", "Name": "api", "Port": 1,
		"Connect": map[string]any{"SidecarService": map[string]any{"Proxy": map[string]any{
			"Upstreams": []map[string]any{{"DestinationName": "web", "LocalBindPort": up}}}}}})
	testutil.Wait(t, 5*time.Second, "web on n0, api on n1", func() bool {
		return visibleOn(t, as[0], "web", 1)() && visibleOn(t, as[1], "api", 1)()
	})
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/x", up))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "web-on-n1 /x" {
		t.Fatalf("through the sidecar upstream: %q", b)
	}
	if n := as[1].mesh.forwarded.snapshot()[[2]string{"api", "web"}]; n == 0 {
		t.Errorf("n1 forwarded no connection from the identity of api: %v", as[1].mesh.forwarded.snapshot())
	}
	// A taken port refuses the registration, which changes nothing.
	code, body := do(t, as[0], "PUT", "/v1/agent/service/register", map[string]any{"ID": "other", "Name": "other", "Port": 1,
		"Connect": map[string]any{"SidecarService": map[string]any{"Proxy": map[string]any{
			"Upstreams": []map[string]any{{"DestinationName": "web", "LocalBindPort": up}}}}}})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "already the upstream") {
		t.Errorf("a taken upstream port: %d %s", code, body)
	}
	if _, ok := as[0].reg.current().Services["other"]; ok {
		t.Error("the refused registration was stored")
	}
	// Fields Shoal does not serve are refused, not ignored.
	code, body = do(t, as[0], "PUT", "/v1/agent/service/register", map[string]any{"Name": "x", "Port": 1,
		"Connect": map[string]any{"Native": true}})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "Connect.Native") {
		t.Errorf("Connect.Native: %d %s", code, body)
	}

	if code, body := do(t, as[0], "PUT", "/v1/agent/service/deregister/api-1", nil); code != http.StatusOK {
		t.Fatalf("deregister: %d %s", code, body)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", up), time.Second); err == nil {
		c.Close()
		t.Error("the upstream listener outlived its service")
	}
}

// TestMeshRootRotation rotates the root in the three documented steps
// while requests run through the mesh: none fails, and at the end only the
// new root is trusted.
func TestMeshRootRotation(t *testing.T) {
	oldRoot := newTestPKI(t, "mesh.test")
	var files [2][3]string // CA file, node cert, node key
	as := startAgentsWith(t, 2, func(i int, c *Config) {
		// Each node has its own copy of the CA file, as on real machines.
		c.CAFile = filepath.Join(t.TempDir(), "ca.pem")
		copyFile(t, oldRoot.caFile, c.CAFile)
		c.NodeCertFile, c.NodeKeyFile = oldRoot.node(fmt.Sprintf("n%d", i))
		files[i] = [3]string{c.CAFile, c.NodeCertFile, c.NodeKeyFile}
	})
	_, port := backend(t, "web-on-n1")
	registerDef(t, as[1], map[string]any{"ID": "web-1", "Name": "web", "Address": "127.0.0.1", "Port": port})
	testutil.Wait(t, 5*time.Second, "web on n0", visibleOn(t, as[0], "web", 1))

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			client := &http.Client{Transport: &http.Transport{}} // a new connection, and a new mesh one, now and then
			for range 10 {
				if code, _, err := proxyGet(client, as[0], "web", "/"); err != nil || code != http.StatusOK {
					failed.Add(1)
					t.Logf("request failed: %d %v", code, err)
				} else {
					ok.Add(1)
				}
			}
			client.CloseIdleConnections()
			// And a fresh mesh connection, so that every step is met by
			// new handshakes, not only by pooled connections.
			if err := meshGet(as[0], as[1].Cluster().RPCAddr(), "n1/web-1"); err != nil {
				failed.Add(1)
				t.Logf("new mesh connection failed: %v", err)
			} else {
				ok.Add(1)
			}
		}
	})
	flowing := func(what string) {
		n := ok.Load()
		testutil.Wait(t, 5*time.Second, "traffic "+what, func() bool { return ok.Load() > n+50 })
	}
	reloadAll := func(step string) {
		for _, a := range as {
			if err := a.Reload(); err != nil {
				t.Fatalf("%s: reload %s: %v", step, a.NodeName(), err)
			}
		}
		flowing("after " + step)
	}
	flowing("before the rotation")

	newRoot := newTestPKI(t, "mesh.test")
	// 1. Trust both roots.
	for _, f := range files {
		b, _ := os.ReadFile(f[0])
		writeFile(t, f[0], append(b, newRoot.caCert...))
	}
	reloadAll("step 1")
	// 2. Node certificates from the new root.
	for i, f := range files {
		cert, key := newRoot.node(fmt.Sprintf("n%d", i))
		copyFile(t, cert, f[1])
		copyFile(t, key, f[2])
	}
	reloadAll("step 2")
	// 3. Trust only the new root.
	for _, f := range files {
		writeFile(t, f[0], newRoot.caCert)
	}
	reloadAll("step 3")
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed during the root rotation", f, f+ok.Load())
	}
	for _, a := range as {
		if roots := a.ids.Bundle().Roots; len(roots) != 1 {
			t.Errorf("%s trusts %d roots after the rotation", a.NodeName(), len(roots))
		}
	}
	// The old root's identities are refused now.
	stale, err := pkiLeafFrom(t, oldRoot, "n0")
	if err != nil {
		t.Fatal(err)
	}
	if reply := meshDialRaw(t, stale, as[1].Cluster().RPCAddr(), "web-1"); !strings.HasPrefix(reply, "refused certificate:") {
		t.Errorf("an identity from the removed root was answered %q", reply)
	}
}

// meshGet makes one HTTP/1.0 request over a new mesh connection from a.
func meshGet(a *Agent, via, instance string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := a.mesh.Dial(ctx, via, instance, "")
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "200 OK") {
		return fmt.Errorf("answer %q", b)
	}
	return nil
}

// pkiLeafFrom signs a node leaf for name with a node certificate of p.
func pkiLeafFrom(t *testing.T, p *testPKI, name string) (tls.Certificate, error) {
	cert, key := p.node(name)
	b, err := pki.LoadBundle(p.caFile, cert, key, name, time.Now())
	if err != nil {
		return tls.Certificate{}, err
	}
	l, err := b.IssueLeaf("", time.Hour, time.Now())
	if err != nil {
		return tls.Certificate{}, err
	}
	return l.Cert, nil
}
