package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	nethttp "net/http"
	"strings"
	"time"

	"github.com/shoal-mesh/shoal/node/pki"
)

// The mesh rows of "shoal-bench proxy": two hops, client → proxy A →
// (mutual TLS) → B → backends, for Shoal (two agents with the node PKI:
// A's proxy reaches B's instances through B's agent) and for HAProxy in the
// same shape (HAProxy A → "ssl" with a client certificate → HAProxy B,
// which verifies it, → backends; keep-alive on every hop). A plaintext
// HAProxy chain shows what TLS costs HAProxy; Shoal's one-hop row shows
// what the mesh costs Shoal.

// benchPKI is the certificate material of a run's mesh rows.
type benchPKI struct {
	caFile string
	// nodes holds each node's certificate and key files.
	nodes map[string][2]string
	// haproxy holds a PEM file (leaf, node CA, key) per HAProxy.
	haproxy map[string]string
}

func writeBenchPKI(env *benchEnv, names ...string) (*benchPKI, error) {
	now := time.Now()
	caCert, caKey, err := pki.CreateCA("bench.shoal", 24*time.Hour, now)
	if err != nil {
		return nil, err
	}
	p := &benchPKI{nodes: map[string][2]string{}, haproxy: map[string]string{}}
	if p.caFile, err = env.write("ca.pem", string(caCert)); err != nil {
		return nil, err
	}
	for _, name := range names {
		cert, key, err := pki.CreateNodeCA(caCert, caKey, name, 12*time.Hour, now)
		if err != nil {
			return nil, err
		}
		certFile, err := env.write(name+".pem", string(cert))
		if err != nil {
			return nil, err
		}
		keyFile, err := env.write(name+"-key.pem", string(key))
		if err != nil {
			return nil, err
		}
		p.nodes[name] = [2]string{certFile, keyFile}
		// HAProxy gets a leaf of the same PKI: the same key type, chain
		// length and checks as Shoal's hop.
		b, err := pki.LoadBundle(p.caFile, certFile, keyFile, name, now)
		if err != nil {
			return nil, err
		}
		leaf, err := b.IssueLeaf("haproxy", 12*time.Hour, now)
		if err != nil {
			return nil, err
		}
		if p.haproxy[name], err = env.write(name+"-haproxy.pem", string(leaf.CertPEM)+string(leaf.KeyPEM)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// startShoalMesh starts agents A (the caller's proxy) and B (the backends'
// node), both with the PKI, and returns the target through A's proxy.
func startShoalMesh(ctx context.Context, env *benchEnv, sb shoalBinary, p *benchPKI, backends []int, label string) (benchTarget, error) {
	var t benchTarget
	ports, err := benchPorts(8)
	if err != nil {
		return t, err
	}
	start := func(name string, gossip, rpc, api, proxy int, join string) (int, error) {
		files := p.nodes[name]
		args := []string{"agent", "--dev", "--node", name, "--log-level", "warn",
			"--bind", fmt.Sprintf("127.0.0.1:%d", gossip), "--rpc-addr", fmt.Sprintf("127.0.0.1:%d", rpc),
			"--http-addr", fmt.Sprintf("127.0.0.1:%d", api), "--proxy-addr", fmt.Sprintf("127.0.0.1:%d", proxy),
			"--dns-addr", "", "--lb-policy", "round_robin",
			"--ca-file", p.caFile, "--node-cert-file", files[0], "--node-key-file", files[1]}
		if join != "" {
			args = append(args, "--join", join)
		}
		proc, err := env.start(sb.path, args...)
		if err != nil {
			return 0, err
		}
		if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", api)); err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return proc.Process.Pid, nil
	}
	aName, bName := "mesh-a"+label, "mesh-b"+label
	pidA, err := start(aName, ports[0], ports[1], ports[2], ports[3], "")
	if err != nil {
		return t, err
	}
	pidB, err := start(bName, ports[4], ports[5], ports[6], ports[7], fmt.Sprintf("127.0.0.1:%d", ports[0]))
	if err != nil {
		return t, err
	}
	api := fmt.Sprintf("http://127.0.0.1:%d", ports[6])
	for i, port := range backends {
		body, _ := json.Marshal(map[string]any{"ID": fmt.Sprintf("web-%d", i+1), "Name": "web", "Address": "127.0.0.1", "Port": port})
		req, _ := nethttp.NewRequestWithContext(ctx, nethttp.MethodPut, api+"/v1/agent/service/register", bytes.NewReader(body))
		resp, err := nethttp.DefaultClient.Do(req)
		if err != nil {
			return t, fmt.Errorf("register backend on %s: %w", bName, err)
		}
		resp.Body.Close()
		if resp.StatusCode != nethttp.StatusOK {
			return t, fmt.Errorf("register backend on %s: %s", bName, resp.Status)
		}
	}
	proxyURL := fmt.Sprintf("http://127.0.0.1:%d/", ports[3])
	if err := waitProxy(ctx, proxyURL, "web", len(backends)); err != nil {
		return t, fmt.Errorf("shoal mesh: %w (logs in %s)", err, env.dir)
	}
	name := "shoal mesh"
	if sb.label != "" {
		name += " " + sb.label
	}
	return benchTarget{name: name, url: proxyURL, host: "web", pid: pidA, pid2: pidB,
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[2])}, nil
}

// startHAProxyChain starts HAProxy A and B in the mesh rows' shape, with
// mutual TLS between them when p is set.
func startHAProxyChain(ctx context.Context, env *benchEnv, haproxy string, threads int, p *benchPKI, backends []int) (benchTarget, error) {
	var t benchTarget
	ports, err := benchPorts(2)
	if err != nil {
		return t, err
	}
	front, hop := ports[0], ports[1]
	kind := "plain"
	serverOpts, bindOpts := "", ""
	if p != nil {
		kind = "mtls"
		serverOpts = fmt.Sprintf(" ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3 alpn http/1.1",
			p.haproxy["ha-a"], p.caFile)
		bindOpts = fmt.Sprintf(" ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3 alpn http/1.1",
			p.haproxy["ha-b"], p.caFile)
	}
	header := fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
`, threads)
	a := header + fmt.Sprintf("frontend f\n  bind 127.0.0.1:%d\n  default_backend b\nbackend b\n  server hop 127.0.0.1:%d%s\n", front, hop, serverOpts)
	var b strings.Builder
	b.WriteString(header)
	fmt.Fprintf(&b, "frontend f\n  bind 127.0.0.1:%d%s\n  default_backend b\nbackend b\n  balance roundrobin\n", hop, bindOpts)
	for i, port := range backends {
		fmt.Fprintf(&b, "  server s%d 127.0.0.1:%d\n", i+1, port)
	}
	var pids [2]int
	for i, conf := range []string{b.String(), a} {
		path, err := env.write(fmt.Sprintf("haproxy-chain-%s-%d.cfg", kind, i), conf)
		if err != nil {
			return t, err
		}
		proc, err := env.start(haproxy, "-db", "-f", path)
		if err != nil {
			return t, err
		}
		pids[i] = proc.Process.Pid
	}
	for _, port := range []int{hop, front} {
		if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			return t, fmt.Errorf("haproxy chain (%s): %w (configs in %s)", kind, err, env.dir)
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", front)
	if err := waitProxy(ctx, url, "", len(backends)); err != nil {
		return t, fmt.Errorf("haproxy chain (%s): %w (logs in %s)", kind, err, env.dir)
	}
	return benchTarget{name: "haproxy chain " + kind, url: url, pid: pids[1], pid2: pids[0]}, nil
}
