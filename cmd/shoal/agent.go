package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/node"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run a Shoal agent: join the cluster, own local services, serve the HTTP API",
		Description: "Flags override the configuration file (--config-file, HCL or JSON).\n" +
			"SIGINT or SIGTERM leaves the cluster gracefully, then exits 0. SIGHUP reloads the node PKI's files.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config-file", Usage: "HCL or JSON configuration `FILE`"},
			&cli.BoolFlag{Name: "dev", Usage: "development mode: in-memory state, loopback binds, fast gossip timers"},
			&cli.StringFlag{Name: "node", Usage: "node `NAME`, unique in the cluster (default: hostname)"},
			&cli.StringFlag{Name: "datacenter", Usage: "datacenter `NAME` (default: dc1)"},
			&cli.StringFlag{Name: "bind", Usage: "gossip `ADDR` host:port, UDP and TCP (default: 0.0.0.0:7946, --dev: 127.0.0.1:7946)"},
			&cli.StringFlag{Name: "advertise", Usage: "gossip `ADDR` host:port peers should use (default: derived from --bind)"},
			&cli.StringFlag{Name: "rpc-addr", Usage: "catalog replication `ADDR` host:port, TCP (default: gossip host, gossip port + 1)"},
			&cli.StringSliceFlag{Name: "join", Usage: "seed `ADDR` host:port to join; repeatable; retried with backoff"},
			&cli.StringFlag{Name: "zone", Usage: "this node's `ZONE`: the proxy prefers instances in its own zone, spilling over when they are slower"},
			&cli.StringSliceFlag{Name: "node-meta", Usage: "node meta `KEY=VALUE`, shown by the catalog and selected by ?node-meta=; repeatable"},
			&cli.StringFlag{Name: "http-addr", Usage: "HTTP API `ADDR` host:port (default: 127.0.0.1:8500)"},
			&cli.StringFlag{Name: "data-dir", Usage: "`DIR` for durable state; required unless --dev"},
			&cli.StringFlag{Name: "encrypt", EnvVars: []string{"SHOAL_ENCRYPT"}, Usage: "base64 gossip encryption `KEY` (see shoal keygen); the data dir's keyring wins once saved"},
			&cli.StringFlag{Name: "ca-file", Usage: "PEM `FILE` of the trusted root CAs (several allowed, for rotation): turns the node PKI on, with --node-cert-file and --node-key-file"},
			&cli.StringFlag{Name: "node-cert-file", Usage: "this node's certificate `FILE` (shoal tls node create)"},
			&cli.StringFlag{Name: "node-key-file", Usage: "this node's private key `FILE`"},
			&cli.StringFlag{Name: "default-intention", Usage: "`ACTION` of the mesh when no intention matches a caller: allow, or deny (only what an intention allows)", DefaultText: "allow"},
			&cli.DurationFlag{Name: "leaf-ttl", Usage: "lifetime of the leaf certificates the agent signs, renewed at half-life", DefaultText: "24h"},
			&cli.StringFlag{Name: "http-token", EnvVars: []string{"SHOAL_HTTP_TOKEN"}, Usage: "API `TOKEN` required for writes (X-Consul-Token, Authorization: Bearer or ?token=)"},
			&cli.BoolFlag{Name: "http-token-reads", Usage: "require --http-token for reads too"},
			&cli.StringSliceFlag{Name: "http-allowed-hosts", Usage: "extra Host `NAME` accepted by a loopback API (DNS rebinding protection); repeatable"},
			&cli.IntFlag{Name: "http-max-conns-per-client", Usage: "concurrent API connections per client IP", DefaultText: "256"},
			&cli.StringFlag{Name: "http-tls-cert", Usage: "PEM certificate `FILE`: serve the API over HTTPS (with --http-tls-key)"},
			&cli.StringFlag{Name: "http-tls-key", Usage: "PEM private key `FILE` of --http-tls-cert"},
			&cli.StringFlag{Name: "proxy-addr", Usage: "HTTP proxy `ADDR` host:port; empty disables (default: 127.0.0.1:15001)"},
			&cli.StringFlag{Name: "dns-addr", Usage: "DNS `ADDR` host:port, UDP and TCP; empty disables (default: 127.0.0.1:8600)"},
			&cli.StringFlag{Name: "dns-domain", Usage: "service `DOMAIN` of DNS and the proxy: NAME.service.DOMAIN (default: shoal)"},
			&cli.DurationFlag{Name: "dns-ttl", Usage: "TTL of DNS answers, whole seconds", DefaultText: "0s"},
			&cli.StringSliceFlag{Name: "upstream", Usage: "TCP upstream `NAME=ADDR`: a local listener balancing over service NAME; repeatable"},
			&cli.StringFlag{Name: "lb-policy", Usage: "default balancing `POLICY`: round_robin, random, least_request, ewma, latency or hash (default: least_request)"},
			&cli.BoolFlag{Name: "proxy-debug-headers", Usage: "add X-Shoal-Instance and X-Shoal-Route to proxied HTTP answers, naming what served them"},
			&cli.DurationFlag{Name: "reap-after", Usage: "remove failed nodes and their services after `DURATION`", DefaultText: "72h"},
			&cli.BoolFlag{Name: "enable-debug", Usage: "serve Go profiles under /debug/pprof/ on the HTTP API"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL`: debug, info, warn or error"},
			&cli.BoolFlag{Name: "log-json", Usage: "log JSON lines instead of text"},
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return err },
		Action:       runAgent,
	}
}

// agentConfig builds the agent configuration: profile defaults, then the
// configuration file, then the flags that were set.
func agentConfig(c *cli.Context) (node.Config, string, bool, error) {
	var fc *node.FileConfig
	if path := c.String("config-file"); path != "" {
		var err error
		if fc, err = node.LoadConfigFile(path); err != nil {
			return node.Config{}, "", false, err
		}
	}
	dev := c.Bool("dev")
	if !c.IsSet("dev") && fc != nil && fc.Dev != nil {
		dev = *fc.Dev
	}
	cfg := node.DefaultConfig()
	if dev {
		cfg = node.DevConfig()
	}
	level, jsonLogs := c.String("log-level"), c.Bool("log-json")
	if fc != nil {
		if err := fc.Apply(&cfg); err != nil {
			return cfg, "", false, err
		}
		if fc.LogLevel != nil && !c.IsSet("log-level") {
			level = *fc.LogLevel
		}
		if fc.LogJSON != nil && !c.IsSet("log-json") {
			jsonLogs = *fc.LogJSON
		}
	}
	for flag, dst := range map[string]*string{
		"node": &cfg.NodeName, "datacenter": &cfg.Datacenter, "bind": &cfg.BindAddr,
		"advertise": &cfg.AdvertiseAddr, "rpc-addr": &cfg.RPCAddr, "http-addr": &cfg.HTTPAddr,
		"data-dir": &cfg.DataDir, "encrypt": &cfg.Encrypt, "http-token": &cfg.HTTP.Token,
		"dns-addr": &cfg.DNSAddr, "dns-domain": &cfg.Domain,
		"http-tls-cert": &cfg.HTTP.TLSCertFile, "http-tls-key": &cfg.HTTP.TLSKeyFile,
		"ca-file": &cfg.CAFile, "node-cert-file": &cfg.NodeCertFile, "node-key-file": &cfg.NodeKeyFile,
		"default-intention": &cfg.DefaultIntention, "zone": &cfg.Zone,
	} {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
	if c.IsSet("join") {
		cfg.Join = c.StringSlice("join")
	}
	if c.IsSet("node-meta") {
		meta, err := node.ParseNodeMeta(c.StringSlice("node-meta"))
		if err != nil {
			return cfg, "", false, err
		}
		cfg.NodeMeta = meta
	}
	if c.IsSet("http-token-reads") {
		cfg.HTTP.TokenReads = c.Bool("http-token-reads")
	}
	if c.IsSet("http-allowed-hosts") {
		cfg.HTTP.AllowedHosts = c.StringSlice("http-allowed-hosts")
	}
	if c.IsSet("http-max-conns-per-client") {
		cfg.HTTP.MaxConnsPerClient = c.Int("http-max-conns-per-client")
	}
	if c.IsSet("proxy-addr") {
		cfg.Proxy.HTTPAddr = c.String("proxy-addr")
	}
	if c.IsSet("lb-policy") {
		cfg.Proxy.Policy = c.String("lb-policy")
	}
	if c.IsSet("proxy-debug-headers") {
		cfg.Proxy.DebugHeaders = c.Bool("proxy-debug-headers")
	}
	if c.IsSet("upstream") {
		ups, err := node.ParseUpstreams(c.StringSlice("upstream"))
		if err != nil {
			return cfg, "", false, err
		}
		cfg.Proxy.Upstreams = ups
	}
	if c.IsSet("enable-debug") {
		cfg.EnableDebug = c.Bool("enable-debug")
	}
	if c.IsSet("reap-after") {
		cfg.ReapAfter = c.Duration("reap-after")
	}
	if c.IsSet("leaf-ttl") {
		cfg.LeafTTL = c.Duration("leaf-ttl")
	}
	if c.IsSet("dns-ttl") {
		cfg.DNSTTL = c.Duration("dns-ttl")
	}
	if !dev && cfg.DataDir == "" {
		return cfg, "", false, errors.New("--data-dir is required (or run with --dev for an in-memory agent)")
	}
	return cfg, level, jsonLogs, nil
}

func runAgent(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("agent takes no arguments, got %q", c.Args().First())
	}
	cfg, level, jsonLogs, err := agentConfig(c)
	if err != nil {
		return err
	}
	logger, err := newLogger(c.App.ErrWriter, level, jsonLogs)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	agent, err := node.New(cfg)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if err := agent.Start(); err != nil {
		agent.Shutdown()
		return err
	}
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
wait:
	for {
		select {
		case <-hups:
			// Reload logs its own outcome; a failed one keeps what runs.
			_ = agent.Reload()
		case sig := <-sigs:
			logger.Info("signal received, leaving the cluster", "signal", sig.String())
			break wait
		case <-agent.LeaveRequested():
			logger.Info("leave requested over the API, leaving the cluster")
			break wait
		}
	}
	left := make(chan error, 1)
	go func() { left <- agent.Leave() }()
	select {
	case err := <-left:
		if err != nil {
			logger.Warn("graceful leave failed", "err", err)
		}
	case sig := <-sigs:
		logger.Warn("second signal, shutting down without leaving", "signal", sig.String())
	}
	if err := agent.Shutdown(); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	logger.Info("agent stopped")
	return nil
}

// newLogger builds the process logger writing to w.
func newLogger(w io.Writer, level string, jsonLogs bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	if jsonLogs {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
