package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/node"
)

// demoService is the name of the sample service the demo registers.
const demoService = "hello"

// demoConvergeTimeout bounds the wait for every agent to see every member
// alive and every instance passing.
const demoConvergeTimeout = 30 * time.Second

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a local demo cluster: agents, sample services, proxies, status page",
		Description: `Starts, in this one process on 127.0.0.1, a cluster of --agents agents
(dev timers, in-memory state) and --instances instances of the sample HTTP
service "hello" spread over them. Each instance answers "hello from
INSTANCE on NODE" and has an HTTP health check on its own /health, which
POST /fail and POST /recover flip. The instances are registered through
the agents' HTTP API, like any service. When everything has converged, the
demo prints what to try; Ctrl-C makes every agent leave gracefully.

Agent i (from 0) serves its HTTP API on --http-port + i and its proxy on
--proxy-port + i; the first agent serves DNS on --dns-port. A port that is
taken is replaced by a free one, with a note. Port 0 picks free ports.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "agents", Value: 3, Usage: "`N` agents, 1-9"},
			&cli.IntFlag{Name: "instances", Value: 3, Usage: "`N` instances of the hello service, 1-50, spread over the agents"},
			&cli.IntFlag{Name: "http-port", Value: 8500, Usage: "HTTP API `PORT` of the first agent; the others count up"},
			&cli.IntFlag{Name: "proxy-port", Value: 15001, Usage: "proxy `PORT` of the first agent; the others count up"},
			&cli.IntFlag{Name: "dns-port", Value: 8600, Usage: "DNS `PORT` of the first agent (UDP and TCP)"},
			&cli.StringFlag{Name: "log-level", Value: "error", Usage: "agent log `LEVEL`: debug, info, warn or error (to stderr)"},
		},
		Action: runDemo,
	}
}

// demoCluster is the running demo: its agents, in start order, and the
// backends of the sample service.
type demoCluster struct {
	log      *slog.Logger
	agents   []*node.Agent
	backends []*demoBackend
	// notes say which preferred ports were taken and what was used instead.
	notes []string
}

func runDemo(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("demo takes no arguments, got %q", args)
	}
	n, instances := c.Int("agents"), c.Int("instances")
	var errs []error
	if n < 1 || n > 9 {
		errs = append(errs, fmt.Errorf("--agents %d: want 1-9", n))
	}
	if instances < 1 || instances > 50 {
		errs = append(errs, fmt.Errorf("--instances %d: want 1-50", instances))
	}
	for _, f := range []string{"http-port", "proxy-port", "dns-port"} {
		if p := c.Int(f); p < 0 || p+n-1 > 65535 {
			errs = append(errs, fmt.Errorf("--%s %d: want 0-%d", f, p, 65535-n+1))
		}
	}
	if err := joinErrors(errs); err != nil {
		return err
	}
	logger, err := newLogger(c.App.ErrWriter, c.String("log-level"), false)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	d := &demoCluster{log: logger}
	defer d.shutdown(c.App.Writer)
	out := c.App.Writer
	fmt.Fprintf(out, "Starting %d agents and %d instances of %q on 127.0.0.1...\n", n, instances, demoService)
	if err := d.startAgents(n, c.Int("http-port"), c.Int("proxy-port"), c.Int("dns-port")); err != nil {
		return err
	}
	err = d.startBackends(ctx, instances)
	if err == nil {
		err = d.waitConverged(ctx, instances)
	}
	if err == nil {
		d.printGuide(out)
		<-ctx.Done()
	}
	if ctx.Err() != nil {
		// Ctrl-C, also while starting: not an error.
		fmt.Fprintln(out, "\nStopping: every agent leaves the cluster gracefully...")
		return nil
	}
	return err
}

// startAgents starts n agents, each joining the first.
func (d *demoCluster) startAgents(n, httpPort, proxyPort, dnsPort int) error {
	for i := range n {
		name := "n" + strconv.Itoa(i+1)
		cfg := node.DevConfig()
		cfg.NodeName = name
		cfg.BindAddr = "127.0.0.1:0" // gossip and catalog ports: any free ones
		cfg.HTTPAddr = d.pickAddr(httpPort, i, false, name+"'s HTTP API")
		cfg.Proxy.HTTPAddr = d.pickAddr(proxyPort, i, false, name+"'s proxy")
		cfg.DNSAddr = ""
		if i == 0 {
			cfg.DNSAddr = d.pickAddr(dnsPort, 0, true, name+"'s DNS")
		} else {
			cfg.Join = []string{d.agents[0].Cluster().LocalMember().GossipAddr()}
		}
		cfg.Logger = d.log.With("node", name)
		a, err := node.New(cfg)
		if err != nil {
			return fmt.Errorf("agent %s: %w", name, err)
		}
		if err := a.Start(); err != nil {
			a.Shutdown()
			return fmt.Errorf("agent %s: %w", name, err)
		}
		d.agents = append(d.agents, a)
	}
	return nil
}

// pickAddr returns 127.0.0.1:port+i, or a free port when that one is taken
// (noting it); port 0 always means a free port. The probe is only a guess:
// if the port is taken between the probe and the agent's bind, Start fails
// with the address in its error.
func (d *demoCluster) pickAddr(port, i int, udp bool, what string) string {
	if port == 0 {
		return "127.0.0.1:0"
	}
	want := net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i))
	if err := probePort(want, udp); err != nil {
		d.notes = append(d.notes, fmt.Sprintf("%s is in use, so %s is on a free port instead", want, what))
		return "127.0.0.1:0"
	}
	return want
}

// probePort reports whether addr can be bound now, TCP (and UDP with udp).
func probePort(addr string, udp bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ln.Close()
	if udp {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		pc.Close()
	}
	return nil
}

// startBackends starts the instances of the sample service, instance i on
// agent i mod len(agents), and registers each with its agent over the HTTP
// API, with an HTTP health check on its /health.
func (d *demoCluster) startBackends(ctx context.Context, n int) error {
	for i := range n {
		a := d.agents[i%len(d.agents)]
		id := fmt.Sprintf("%s-%d", demoService, i+1)
		b, err := startDemoBackend(id, a.NodeName(), d.log)
		if err != nil {
			return err
		}
		d.backends = append(d.backends, b)
		reg := map[string]any{
			"Name": demoService, "ID": id, "Address": "127.0.0.1", "Port": b.port(),
			"Tags": []string{"demo"},
			// Round-robin makes the balancing easy to see with a few curls.
			"Meta": map[string]string{"lb_policy": "round_robin"},
			"Check": map[string]any{
				"Name": "GET /health", "HTTP": b.url("/health"),
				"Interval": "1s", "Timeout": "1s",
			},
		}
		client := demoClient(a)
		if err := client.put(ctx, "/v1/agent/service/register", reg, nil); err != nil {
			return fmt.Errorf("register %s with %s: %w", id, a.NodeName(), err)
		}
	}
	return nil
}

// demoClient is an API client of one of the demo's agents.
func demoClient(a *node.Agent) *apiClient {
	return &apiClient{addr: a.HTTPAddr(), http: &http.Client{Timeout: requestTimeout}}
}

// waitConverged waits until every agent sees every member alive and every
// instance passing, asking each agent's API as a user would.
func (d *demoCluster) waitConverged(ctx context.Context, instances int) error {
	ctx, cancel := context.WithTimeout(ctx, demoConvergeTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	state := "no answer yet"
	for {
		ok, s := d.converged(ctx, instances)
		if ok {
			return nil
		}
		state = s
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the demo cluster did not converge within %v: %s", demoConvergeTimeout, state)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// converged reports whether every agent sees the whole cluster healthy, or
// what is still missing.
func (d *demoCluster) converged(ctx context.Context, instances int) (bool, string) {
	for _, a := range d.agents {
		client := demoClient(a)
		var members []agentMember
		if err := client.get(ctx, "/v1/agent/members", &members); err != nil {
			return false, err.Error()
		}
		alive := 0
		for _, m := range members {
			if memberStatus(m.Status) == "alive" {
				alive++
			}
		}
		if alive != len(d.agents) {
			return false, fmt.Sprintf("%s sees %d of %d members alive", a.NodeName(), alive, len(d.agents))
		}
		var entries []serviceEntry
		if err := client.get(ctx, "/v1/health/service/"+demoService+"?passing", &entries); err != nil {
			return false, err.Error()
		}
		if len(entries) != instances {
			return false, fmt.Sprintf("%s sees %d of %d instances passing", a.NodeName(), len(entries), instances)
		}
	}
	return true, ""
}

// printGuide prints the cluster's addresses and what to try.
func (d *demoCluster) printGuide(w io.Writer) {
	first := d.agents[0]
	fmt.Fprintf(w, "\nShoal demo: %d agents and %d instances of %q, all on 127.0.0.1. Ctrl-C stops it.\n\n",
		len(d.agents), len(d.backends), demoService)
	for _, note := range d.notes {
		fmt.Fprintf(w, "Note: %s.\n", note)
	}
	if len(d.notes) > 0 {
		fmt.Fprintln(w)
	}

	tw := newTable(w)
	fmt.Fprintln(tw, "  Agent\tHTTP API\tProxy\tDNS")
	for _, a := range d.agents {
		dns := a.DNSAddr()
		if dns == "" {
			dns = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a.NodeName(), a.HTTPAddr(), a.Proxy().HTTPAddr(), dns)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "  Instance\tAgent\tAddress\tHealth check")
	for _, b := range d.backends {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", b.id, b.node, b.addr(), b.url("/health"))
	}
	tw.Flush()

	victim := d.backends[min(1, len(d.backends)-1)]
	cmd := func(sub string, args ...string) string {
		parts := append([]string{"shoal"}, strings.Fields(sub)...)
		if first.HTTPAddr() != defaultHTTPAddr {
			parts = append(parts, "--http-addr", first.HTTPAddr()) // flags before arguments
		}
		return strings.Join(append(parts, args...), " ")
	}
	proxy := first.Proxy().HTTPAddr()
	fmt.Fprintf(w, `
Try it from another terminal ("shoal" is this binary, or: go run ./cmd/shoal):

  # Requests through a proxy take turns over the instances (round-robin):
  for i in $(seq %d); do curl -s -H 'Host: %s' http://%s/; done

  # Make %s fail its health check: within a few seconds it turns critical
  # and every proxy stops sending it traffic. Then heal it:
  curl -s -X POST %s
  curl -s -X POST %s

  # The cluster as the agents see it:
  %s
  %s
  %s
  %s
`, 2*len(d.backends), demoService, proxy, victim.id, victim.url("/fail"), victim.url("/recover"),
		cmd("members"), cmd("services", demoService), cmd("watch service", demoService), rttExample(d.agents, cmd))
	if dns := first.DNSAddr(); dns != "" {
		host, port, _ := net.SplitHostPort(dns)
		fmt.Fprintf(w, "  dig @%s -p %s %s.service.shoal SRV\n", host, port, demoService)
	}
	fmt.Fprintf(w, `
  # The status page, live (open it in a browser):
  http://%s/ui/

`, first.HTTPAddr())
}

// rttExample is an rtt command between two agents, or to the only one.
func rttExample(agents []*node.Agent, cmd func(string, ...string) string) string {
	if len(agents) == 1 {
		return cmd("rtt", agents[0].NodeName())
	}
	return cmd("rtt", agents[0].NodeName(), agents[len(agents)-1].NodeName())
}

// shutdown makes every agent leave, all at once, then stops the agents and
// the backends. It is safe on a partly started demo.
func (d *demoCluster) shutdown(w io.Writer) {
	var wg sync.WaitGroup
	for _, a := range d.agents {
		wg.Go(func() {
			if err := a.Leave(); err != nil {
				d.log.Warn("graceful leave failed", "node", a.NodeName(), "err", err)
			}
			if err := a.Shutdown(); err != nil {
				d.log.Warn("shutdown", "node", a.NodeName(), "err", err)
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, b := range d.backends {
		b.shutdown(ctx)
	}
	if len(d.agents) > 0 {
		fmt.Fprintln(w, "Demo stopped.")
	}
}
