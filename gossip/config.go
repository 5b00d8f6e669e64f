package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Timing holds the failure-detection and gossip timers handed to memberlist.
type Timing struct {
	ProbeInterval    time.Duration // how often each member probes a random peer
	ProbeTimeout     time.Duration // how long a probe waits for an ack
	SuspicionMult    int           // suspicion timeout = mult × log(N) × ProbeInterval
	GossipInterval   time.Duration // how often queued broadcasts are sent
	PushPullInterval time.Duration // full-state anti-entropy with a random peer
	TCPTimeout       time.Duration // dial and I/O timeout of memberlist's TCP path
}

// LANTiming is memberlist's LAN profile: the production default.
func LANTiming() Timing {
	return Timing{
		ProbeInterval:    time.Second,
		ProbeTimeout:     500 * time.Millisecond,
		SuspicionMult:    4,
		GossipInterval:   200 * time.Millisecond,
		PushPullInterval: 30 * time.Second,
		TCPTimeout:       10 * time.Second,
	}
}

// LocalTiming is memberlist's loopback profile, used by --dev.
func LocalTiming() Timing {
	return Timing{
		ProbeInterval:    time.Second,
		ProbeTimeout:     200 * time.Millisecond,
		SuspicionMult:    3,
		GossipInterval:   100 * time.Millisecond,
		PushPullInterval: 15 * time.Second,
		TCPTimeout:       time.Second,
	}
}

// TestTiming is a fast profile for in-process test clusters: failures are
// detected in about a second, yet a loaded two-core machine running -race
// does not see false failures.
func TestTiming() Timing {
	return Timing{
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		SuspicionMult:    3,
		GossipInterval:   20 * time.Millisecond,
		PushPullInterval: 2 * time.Second,
		TCPTimeout:       time.Second,
	}
}

// Config configures a Cluster. Start from DefaultConfig.
type Config struct {
	// NodeName is the member's unique name in the cluster.
	NodeName string
	// NodeID is a stable unique ID, published as a tag (Consul's node ID).
	NodeID string
	// Datacenter is published as a tag.
	Datacenter string
	// BindAddr is the gossip address, host:port, UDP and TCP. Port 0 picks one.
	BindAddr string
	// AdvertiseAddr is the gossip address peers should use; empty: the bind
	// address (or the first private address when binding 0.0.0.0).
	AdvertiseAddr string
	// RPCAddr is the TCP address of the node-to-node catalog path. Empty: the
	// gossip bind host, one port above the gossip port (ephemeral when the
	// gossip port is 0).
	RPCAddr string
	// Local is this node's own catalog, kept by its owner (see
	// LocalCatalog). Nil: the node owns no services.
	Local LocalCatalog
	// Seeds are gossip addresses to join at start; Start keeps retrying with
	// backoff in the background until one answers.
	Seeds []string
	// Tags are extra serf tags to publish (e.g. the HTTP API address).
	Tags map[string]string
	// Timing are the failure-detection timers.
	Timing Timing
	// Fanout is how many peers each new delta is pushed to: the agent's
	// two neighbours in the ring of members, and random others.
	Fanout int
	// SyncInterval is how often members' advertised catalog versions are
	// compared with the replica, pulling what is missing.
	SyncInterval time.Duration
	// ReapAfter is how long a failed member (and its services) is kept before
	// it is removed.
	ReapAfter time.Duration
	// TombstoneTTL is how long deregistration tombstones are kept; it must
	// outlive any partition that should heal without a full resync.
	TombstoneTTL time.Duration
	// EntryTombstoneTTL is how long deleted config entries are remembered:
	// a copy of a deleted entry met later (a partition, an agent that was
	// down) loses to its tombstone until then.
	EntryTombstoneTTL time.Duration
	// TagInterval is how long the local catalog must stay unchanged before
	// its new version is advertised in the member's tags: every tag update
	// is a broadcast to the whole cluster, and a burst of changes costs
	// one. The fast path (pushes) spreads the changes meanwhile.
	TagInterval time.Duration
	// TagMaxDelay bounds the wait for a quiet TagInterval: under changes
	// that never stop, the version is still advertised this often.
	TagMaxDelay time.Duration
	// JoinBackoff and JoinBackoffMax bound the retry delay of seed joins.
	JoinBackoff, JoinBackoffMax time.Duration
	// SnapshotPath is serf's snapshot file, used to rejoin known peers after a
	// restart; empty: no snapshot.
	SnapshotPath string
	// Keys are base64 gossip encryption keys (16, 24 or 32 bytes), the first
	// one primary. They encrypt gossip and seal the catalog path. Empty: no
	// encryption.
	Keys []string
	// KeyringFile is where the keyring is saved after each change made with
	// Keyring, so that a restart keeps rotated keys; empty: not saved.
	KeyringFile string
	// Sealer overrides how catalog frames are protected; nil derives it from
	// Keys (plain frames without keys).
	Sealer Sealer
	// Attestor, when set, signs this node's catalog and makes the agent
	// apply other owners' deltas only with their owner's valid signature
	// (see attest.go). Nil: catalogs are not signed, and unsigned deltas
	// are taken.
	Attestor Attestor
	// TLSHandler takes the connections of the catalog port that open with
	// a TLS handshake: the mesh between agents shares the port with the
	// catalog. It owns the connection. Nil: they are dropped as malformed.
	TLSHandler func(net.Conn)
	// Logger receives the cluster's logs; nil discards them.
	Logger *slog.Logger
	// Network, when set, carries all of the cluster's traffic (memberlist's
	// gossip and the catalog path) instead of the host's sockets: tests
	// plug in a network that partitions, drops, delays or black-holes it,
	// benchmarks one that runs thousands of agents in memory. Nil, the
	// default, is the host's sockets, untouched.
	Network Network
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		Datacenter:   "dc1",
		BindAddr:     "0.0.0.0:7946",
		Timing:       LANTiming(),
		Fanout:       3,
		SyncInterval: 10 * time.Second,
		ReapAfter:    72 * time.Hour,
		TombstoneTTL: 72 * time.Hour,

		EntryTombstoneTTL: 7 * 24 * time.Hour,
		TagInterval:       200 * time.Millisecond,
		TagMaxDelay:       2 * time.Second,
		JoinBackoff:       time.Second,
		JoinBackoffMax:    30 * time.Second,
	}
}

// TestConfig returns a configuration for in-process test clusters: loopback,
// ephemeral ports and fast timers.
func TestConfig(name string) Config {
	c := DefaultConfig()
	c.NodeName = name
	c.NodeID = name
	c.BindAddr = "127.0.0.1:0"
	c.Timing = TestTiming()
	c.SyncInterval = 500 * time.Millisecond
	c.TagInterval = 20 * time.Millisecond
	c.TagMaxDelay = 200 * time.Millisecond
	c.JoinBackoff = 50 * time.Millisecond
	c.JoinBackoffMax = 500 * time.Millisecond
	return c
}

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	}
	if _, _, err := splitHostPort(c.BindAddr); err != nil {
		errs = append(errs, fmt.Errorf("bind address %q: %w", c.BindAddr, err))
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitHostPort(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("advertise address %q: %w", c.AdvertiseAddr, err))
		}
	}
	if c.RPCAddr != "" {
		if _, _, err := splitHostPort(c.RPCAddr); err != nil {
			errs = append(errs, fmt.Errorf("rpc address %q: %w", c.RPCAddr, err))
		}
	}
	for i, k := range c.Keys {
		if _, err := ParseKey(k); err != nil {
			errs = append(errs, fmt.Errorf("encryption key %d: %w", i+1, err))
		}
	}
	if c.Fanout < 1 {
		errs = append(errs, fmt.Errorf("fanout %d: must be at least 1", c.Fanout))
	}
	for name, d := range map[string]time.Duration{
		"probe interval": c.Timing.ProbeInterval, "probe timeout": c.Timing.ProbeTimeout,
		"gossip interval": c.Timing.GossipInterval, "push/pull interval": c.Timing.PushPullInterval,
		"sync interval": c.SyncInterval, "reap-after": c.ReapAfter, "tombstone TTL": c.TombstoneTTL,
		"config entry tombstone TTL": c.EntryTombstoneTTL,
		"join backoff":               c.JoinBackoff, "TCP timeout": c.Timing.TCPTimeout,
		"tag interval": c.TagInterval, "tag max delay": c.TagMaxDelay,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: must be positive", name, d))
		}
	}
	return errors.Join(errs...)
}

// splitHostPort splits host:port and checks that the host is an IP address
// and the port a number in 0–65535.
func splitHostPort(addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("host %q is not an IP address", host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, 0, fmt.Errorf("port %q is not a number in 0-65535", portStr)
	}
	return ip, port, nil
}
