package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
	"github.com/shoal-mesh/shoal/lb"
)

// Config configures an Agent. Start from DefaultConfig (or DevConfig).
type Config struct {
	// NodeName is this agent's unique name in the cluster. Default: hostname.
	NodeName string
	// Datacenter is reported by the API, as Consul's. Default: dc1.
	Datacenter string
	// BindAddr is the gossip address, host:port, UDP and TCP. Default 0.0.0.0:7946.
	BindAddr string
	// AdvertiseAddr is the gossip address peers use; empty: derived from BindAddr.
	AdvertiseAddr string
	// RPCAddr is the TCP address of the node-to-node catalog path; empty:
	// the gossip host, one port above the gossip port.
	RPCAddr string
	// Join lists seed gossip addresses; the agent retries them with backoff
	// until one answers.
	Join []string
	// HTTPAddr is the local HTTP API address. Default 127.0.0.1:8500.
	HTTPAddr string
	// HTTP is the API's access control (token, allowed hosts, TLS) and
	// limits. Default: DefaultHTTPConfig.
	HTTP HTTPConfig
	// DNSAddr is the DNS interface's address, UDP and TCP; empty disables
	// it. Default 127.0.0.1:8600.
	DNSAddr string
	// Domain is the service domain of DNS and of the proxy's Host routing
	// (NAME.service.DOMAIN); it sets Proxy.Domain. Default shoal.
	Domain string
	// DNSTTL is the TTL of DNS answers, whole seconds. Default 0, as
	// Consul: clients ask again every time.
	DNSTTL time.Duration
	// DataDir holds the agent's state (services, node ID, serf snapshot).
	// Empty keeps everything in memory: a restart forgets all (--dev).
	DataDir string
	// ReapAfter is how long a failed node is kept before it and its services
	// are removed. Default 72h.
	ReapAfter time.Duration
	// Encrypt is a base64 gossip encryption key (16, 24 or 32 bytes, see
	// "shoal keygen"). It encrypts gossip and the catalog path. Once the
	// data dir holds a keyring (saved at first start and after every
	// rotation), the keyring wins and Encrypt is ignored.
	Encrypt string
	// Zone is this node's zone (an availability zone, a rack): published in
	// its gossip tags; the proxy prefers instances in its own zone (see
	// lb/locality.go). Empty: none.
	Zone string
	// NodeMeta is this node's meta, Consul's NodeMeta: shown by the catalog
	// and selected by ?node-meta=. It travels in the gossip tags, so it is
	// small: see validateNodeMeta.
	NodeMeta map[string]string
	// CAFile, NodeCertFile and NodeKeyFile turn the node PKI on (all three
	// or none): the PEM bundle of trusted roots, and this node's
	// certificate (an intermediate CA from "shoal tls node create") and
	// key. With them, catalogs are signed and traffic to other nodes goes
	// over mutual TLS between agents.
	CAFile, NodeCertFile, NodeKeyFile string
	// LeafTTL is the lifetime of the leaf certificates the agent signs for
	// itself and its services; they are renewed at half-life. Default 24h.
	LeafTTL time.Duration
	// DefaultIntention is what the mesh does when no intention matches a
	// caller and a destination: "allow" (the default, so that turning the
	// PKI on breaks no traffic) or "deny" (only what an intention allows).
	DefaultIntention string
	// EnableDebug serves Go's profiles under /debug/pprof/ on the HTTP API.
	EnableDebug bool
	// Gossip holds the gossip tunables; the fields above override theirs.
	Gossip gossip.Config
	// Proxy configures the local forwarding proxy (HTTP on 127.0.0.1:15001
	// by default; an empty HTTPAddr and no upstreams disable it).
	Proxy lb.Config
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
}

// zoneRe is what a zone name may be.
var zoneRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:   host,
		Datacenter: "dc1",
		BindAddr:   "0.0.0.0:7946",
		HTTPAddr:   "127.0.0.1:8500",
		DNSAddr:    "127.0.0.1:8600",
		Domain:     "shoal",
		HTTP:       DefaultHTTPConfig(),
		ReapAfter:  72 * time.Hour,
		LeafTTL:    24 * time.Hour,

		DefaultIntention: actionAllow,
		Gossip:           gossip.DefaultConfig(),
		Proxy:            lb.DefaultConfig(),
	}
}

// DevConfig returns the --dev profile: state in memory, loopback binds and
// memberlist's fast local timers.
func DevConfig() Config {
	c := DefaultConfig()
	c.BindAddr = "127.0.0.1:7946"
	c.Gossip.Timing = gossip.LocalTiming()
	c.Gossip.SyncInterval = 2 * time.Second
	c.Gossip.JoinBackoff = 200 * time.Millisecond
	c.Gossip.JoinBackoffMax = 5 * time.Second
	return c
}

// TestConfig returns a profile for in-process tests: loopback, ephemeral
// ports, no data dir and the fastest timers.
func TestConfig(name string) Config {
	c := DefaultConfig()
	c.NodeName = name
	c.BindAddr = "127.0.0.1:0"
	c.HTTPAddr = "127.0.0.1:0"
	c.DNSAddr = "127.0.0.1:0"
	c.Gossip = gossip.TestConfig(name)
	c.Proxy.HTTPAddr = "127.0.0.1:0"
	c.Proxy.ShutdownTimeout = 2 * time.Second
	return c
}

// PKI reports whether the node PKI is configured.
func (c *Config) PKI() bool { return c.CAFile != "" }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	} else if len(c.NodeName) > maxNameLen || !nameRe.MatchString(c.NodeName) {
		errs = append(errs, fmt.Errorf("node name %q must be 1-%d letters, digits, '-' or '_'", c.NodeName, maxNameLen))
	}
	if c.Datacenter == "" || !nameRe.MatchString(c.Datacenter) {
		errs = append(errs, fmt.Errorf("datacenter %q must be letters, digits, '-' or '_'", c.Datacenter))
	}
	errs = append(errs, validateNodeMeta(c.NodeMeta)...)
	if c.Zone != "" && (len(c.Zone) > 64 || !zoneRe.MatchString(c.Zone)) {
		errs = append(errs, fmt.Errorf("zone %q: want 1-64 letters, digits, '-', '_' or '.'", c.Zone))
	}
	if set := btoi(c.CAFile != "") + btoi(c.NodeCertFile != "") + btoi(c.NodeKeyFile != ""); set != 0 && set != 3 {
		errs = append(errs, errors.New("ca-file, node-cert-file and node-key-file go together: give all three or none"))
	}
	if c.DefaultIntention != actionAllow && c.DefaultIntention != actionDeny {
		errs = append(errs, fmt.Errorf("default-intention %q: want allow or deny", c.DefaultIntention))
	}
	if c.PKI() && c.LeafTTL < 2*time.Minute {
		errs = append(errs, fmt.Errorf("leaf-ttl %v: must be at least 2m", c.LeafTTL))
	}
	for flag, addr := range map[string]string{"bind": c.BindAddr, "http-addr": c.HTTPAddr} {
		if err := checkHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", flag, addr, err))
		}
	}
	for flag, addr := range map[string]string{"advertise": c.AdvertiseAddr, "rpc-addr": c.RPCAddr} {
		if addr == "" {
			continue
		}
		if err := checkHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", flag, addr, err))
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			errs = append(errs, fmt.Errorf("join %q: want host:port", j))
		}
	}
	if c.Encrypt != "" {
		if _, err := gossip.ParseKey(c.Encrypt); err != nil {
			errs = append(errs, fmt.Errorf("encrypt: %w", err))
		}
	}
	if err := c.HTTP.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateDNS()...)
	if err := c.Proxy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ReapAfter <= 0 {
		errs = append(errs, fmt.Errorf("reap-after %v: must be positive", c.ReapAfter))
	}
	return errors.Join(errs...)
}

// checkHostPort checks an IP:port address.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want IP:port")
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("host %q is not an IP address", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q is not a number in 0-65535", port)
	}
	return nil
}

// gossipConfig merges the agent's settings into the gossip configuration.
func (c *Config) gossipConfig(nodeID, httpAddr, snapshot string) gossip.Config {
	g := c.Gossip
	g.NodeName, g.NodeID, g.Datacenter = c.NodeName, nodeID, c.Datacenter
	g.BindAddr, g.AdvertiseAddr, g.RPCAddr = c.BindAddr, c.AdvertiseAddr, c.RPCAddr
	g.Seeds = c.Join
	g.ReapAfter = c.ReapAfter
	g.SnapshotPath = snapshot
	g.Logger = c.Logger
	g.Tags = map[string]string{gossip.TagHTTP: httpAddr, gossip.TagBuild: Version}
	for k, v := range c.NodeMeta {
		g.Tags[gossip.TagMetaPrefix+k] = v
	}
	if c.Zone != "" {
		g.Tags[tagZone] = c.Zone
	}
	if c.Encrypt != "" {
		g.Keys = []string{c.Encrypt}
	}
	return g
}
