package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Cluster is the local agent's membership in the gossip cluster and its
// replica of the catalog. Create it with New, then Start; Leave before
// Shutdown to let the others see a graceful departure.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	baseLog *slog.Logger // without the component attribute, for serf and memberlist
	catalog *Catalog
	push    *pusher
	pull    *puller
	send    *senders // one per peer (sender.go)
	stats   stats

	serf    *serf.Serf
	events  chan serf.Event
	ln      net.Listener
	rpcAddr string // advertised catalog address
	tagKick chan struct{}
	// localMu serializes SetTags, which rewrites memberlist's local node,
	// with serf's queries (the keyring's), which read that node without
	// memberlist's lock: serf v0.11's Query races with SetTags otherwise.
	localMu sync.Mutex
	// installMu serializes LocalChanged, so that states are installed in
	// the order the owner committed them.
	installMu sync.Mutex
	keyring   *memberlist.Keyring // nil without encryption
	sealer    Sealer              // protects catalog frames; nil: plain
	refused   refusals            // deltas refused on their signature

	entries       *entryStore // cluster-wide config entries (entries.go)
	entryRefused  refusals
	entrySyncKick chan string // a member to exchange entries with now

	net Network // Config.Network, or the host's sockets

	// ctx is cancelled by Shutdown: it ends the catalog path's dials and
	// exchanges in flight.
	ctx          context.Context
	cancel       context.CancelFunc
	stop         chan struct{}
	wg           sync.WaitGroup
	shutdownOnce sync.Once
}

// New validates cfg and prepares a cluster; nothing listens until Start.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Cluster{
		cfg:     cfg,
		log:     log.With("component", "gossip"),
		baseLog: log,
		catalog: newCatalog(cfg.NodeName, time.Now),
		events:  make(chan serf.Event, 4096),
		tagKick: make(chan struct{}, 1),
		stop:    make(chan struct{}),

		entries:       newEntryStore(),
		entrySyncKick: make(chan string, 16),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.net = cfg.Network
	if c.net == nil {
		c.net = hostNetwork{}
	}
	c.catalog.signed = cfg.Attestor != nil
	c.push = newPusher(c)
	c.pull = newPuller(c)
	c.send = newSenders(c)
	kr, err := newKeyring(cfg.Keys)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	c.keyring, c.sealer = kr, cfg.Sealer
	if kr != nil && c.sealer == nil {
		c.sealer = newKeyringSealer(kr)
	}
	return c, nil
}

// Catalog is the replicated catalog. It is usable before Start.
func (c *Cluster) Catalog() *Catalog { return c.catalog }

// Stats returns the traffic counters of the node-to-node catalog path.
func (c *Cluster) Stats() Stats {
	s := c.stats.snapshot()
	s.Refused = c.refused.snapshot(RefusedUnsigned, RefusedSignature, RefusedDigest)
	s.EntriesRefused = c.entryRefused.snapshot(RefusedUnsigned, RefusedSignature, RefusedLimit)
	return s
}

// RPCAddr is the advertised address of the node-to-node catalog path.
func (c *Cluster) RPCAddr() string { return c.rpcAddr }

// Start binds the catalog listener and the gossip ports, then joins the seeds
// in the background, retrying with backoff until one answers.
func (c *Cluster) Start() error {
	if c.cfg.Local != nil {
		// The first tags peers see carry the local version and floor.
		c.installMu.Lock()
		err := c.installLocalLocked(false)
		c.installMu.Unlock()
		if err != nil {
			return err
		}
	}
	bindIP, bindPort, _ := splitHostPort(c.cfg.BindAddr)
	advIP, advPort := bindIP, bindPort
	if c.cfg.AdvertiseAddr != "" {
		advIP, advPort, _ = splitHostPort(c.cfg.AdvertiseAddr)
	} else if bindIP.IsUnspecified() {
		private, err := sockaddr.GetPrivateIP()
		if err != nil || private == "" {
			return fmt.Errorf("gossip: bind %s: no private address to advertise; set the advertise address", c.cfg.BindAddr)
		}
		advIP = net.ParseIP(private)
	}

	rpcBind := c.cfg.RPCAddr
	if rpcBind == "" {
		port := 0
		if bindPort != 0 {
			port = bindPort + 1
		}
		rpcBind = net.JoinHostPort(bindIP.String(), strconv.Itoa(port))
	}
	ln, err := c.net.Listen(c.cfg.NodeName, rpcBind)
	if err != nil {
		return fmt.Errorf("gossip: catalog listener: %w", err)
	}
	rpcPort := ln.Addr().(*net.TCPAddr).Port
	c.rpcAddr = net.JoinHostPort(advIP.String(), strconv.Itoa(rpcPort))
	c.ln = ln

	sc := c.serfConfig(bindIP, bindPort, advIP, advPort)
	// Binding is I/O, so it happens here rather than in serfConfig.
	if err := c.attachTransport(sc.MemberlistConfig); err != nil {
		ln.Close()
		return fmt.Errorf("gossip: bind %s: %w", c.cfg.BindAddr, err)
	}
	advPort = sc.MemberlistConfig.AdvertisePort
	s, err := serf.Create(sc)
	if err != nil {
		ln.Close()
		if t := sc.MemberlistConfig.Transport; t != nil {
			t.Shutdown()
		}
		return fmt.Errorf("gossip: start serf on %s: %w", c.cfg.BindAddr, err)
	}
	c.serf = s
	c.catalog.setMember(convertMember(s.LocalMember()))

	c.wg.Add(7)
	go c.entryLoop()
	go c.serveRPC()
	go c.eventLoop()
	go c.push.run()
	go c.pull.run()
	go c.tagLoop()
	go c.reapLoop()
	if len(c.cfg.Seeds) > 0 {
		c.wg.Add(1)
		go c.joinLoop(c.cfg.Seeds)
	}
	c.log.Info("gossip started", "node", c.cfg.NodeName, "bind", c.cfg.BindAddr,
		"advertise", c.LocalMember().GossipAddr(), "catalog", c.rpcAddr)
	return nil
}

// attachTransport installs the Network's gossip transport, if it has one,
// as ml.Transport. Memberlist only resolves a bind port of 0 when it creates
// its own transport, so the port the Network bound is written back as the
// bind port (which memberlist also advertises in some messages) and, when
// none was set, the advertise port.
func (c *Cluster) attachTransport(ml *memberlist.Config) error {
	t, port, err := c.net.GossipTransport(c.cfg.NodeName, ml.BindAddr, ml.BindPort)
	if err != nil || t == nil {
		return err
	}
	if ml.BindPort == 0 {
		ml.BindPort = port
		if ml.AdvertisePort == 0 {
			ml.AdvertisePort = port
		}
	}
	ml.Transport = t
	return nil
}

func (c *Cluster) serfConfig(bindIP net.IP, bindPort int, advIP net.IP, advPort int) *serf.Config {
	ml := memberlist.DefaultLANConfig()
	ml.Name = c.cfg.NodeName
	ml.BindAddr, ml.BindPort = bindIP.String(), bindPort
	ml.AdvertiseAddr, ml.AdvertisePort = advIP.String(), advPort
	t := c.cfg.Timing
	ml.ProbeInterval, ml.ProbeTimeout = t.ProbeInterval, t.ProbeTimeout
	ml.SuspicionMult = t.SuspicionMult
	ml.GossipInterval, ml.PushPullInterval = t.GossipInterval, t.PushPullInterval
	ml.TCPTimeout = t.TCPTimeout
	if t.ProbeInterval < time.Second {
		// Fast profiles: dead members stop being gossiped to sooner too.
		ml.GossipToTheDeadTime = 10 * t.ProbeInterval
	}
	// A crashed agent restarted on another address may take its name back
	// once it has been dead this long (memberlist's default: never).
	ml.DeadNodeReclaimTime = 10 * t.ProbeInterval
	logger := newStdLogger(c.baseLog, "memberlist")
	ml.Logger = logger
	ml.Keyring = c.keyring

	sc := serf.DefaultConfig()
	sc.NodeName = c.cfg.NodeName
	sc.Tags = c.tags()
	sc.EventCh = c.events
	sc.MemberlistConfig = ml
	sc.Logger = newStdLogger(c.baseLog, "serf")
	sc.ReconnectTimeout = c.cfg.ReapAfter
	sc.TombstoneTimeout = c.cfg.ReapAfter
	sc.SnapshotPath = c.cfg.SnapshotPath
	// No name-conflict vote. An agent restarted on a new address before
	// its crash was noticed finds every peer still holding the old one;
	// serf's vote then goes against it and serf shuts itself down, leaving
	// the agent running with no gossip. Without the vote memberlist refuses
	// the new address (and logs the conflict) until the old one has been
	// dead for DeadNodeReclaimTime; the restarted agent's next push-pull
	// then learns of its death, refutes it, and the new address is taken.
	// The vote's code also reads the local node unlocked while SetTags
	// writes it.
	sc.EnableNameConflictResolution = false
	sc.KeyringFile = c.cfg.KeyringFile
	// SetTags waits for its broadcast up to this long, and Shutdown waits
	// for SetTags: keep it a few gossip rounds rather than serf's 5 s.
	sc.BroadcastTimeout = min(max(10*t.GossipInterval, 200*time.Millisecond), 5*time.Second)
	if t.ProbeInterval < time.Second {
		sc.ReapInterval = 10 * t.ProbeInterval
		sc.ReconnectInterval = 5 * t.ProbeInterval
		sc.LeavePropagateDelay = 2 * t.GossipInterval
	}
	// Keyring operations are serf queries that wait GossipInterval ×
	// QueryTimeoutMult × log10(N+1) for every member's answer: 3.2 s and up
	// on LAN timing, but 320 ms on fast profiles, which a busy machine
	// misses, failing a rotation step. Keep it at least a second.
	if d := t.GossipInterval * time.Duration(sc.QueryTimeoutMult); d > 0 && d < time.Second {
		sc.QueryTimeoutMult = int((time.Second + t.GossipInterval - 1) / t.GossipInterval)
	}
	return sc
}

// tags returns the local member's serf tags as of now.
func (c *Cluster) tags() map[string]string {
	tags := maps.Clone(c.cfg.Tags)
	if tags == nil {
		tags = make(map[string]string)
	}
	tags[TagRole] = "node"
	vsn := strconv.Itoa(Protocol)
	tags[TagProtocol], tags[TagProtocolMin], tags[TagProtocolMax] = vsn, vsn, vsn
	tags[TagDatacenter] = c.cfg.Datacenter
	tags[TagNodeID] = c.cfg.NodeID
	tags[TagRPC] = c.rpcAddr
	tags[TagVersion] = strconv.FormatUint(c.catalog.Version(c.cfg.NodeName), 10)
	tags[TagFloor] = strconv.FormatUint(c.catalog.floor(c.cfg.NodeName), 10)
	return tags
}

// tagLoop advertises the local catalog version in the serf tags once the
// catalog has been quiet for TagInterval, or TagMaxDelay after the first
// change not advertised yet when changes never stop: every tag update is a
// broadcast that each member retransmits, so a burst costs one.
func (c *Cluster) tagLoop() {
	defer c.wg.Done()
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	due := time.NewTimer(time.Hour)
	due.Stop()
	pending := false
	for {
		select {
		case <-c.stop:
			return
		case <-c.tagKick:
			if !pending {
				pending = true
				due.Reset(c.cfg.TagMaxDelay)
			}
			quiet.Reset(c.cfg.TagInterval)
			continue
		case <-quiet.C:
		case <-due.C:
		}
		if !pending {
			continue
		}
		pending = false
		quiet.Stop()
		due.Stop()
		c.stats.tagUpdates.Add(1)
		c.localMu.Lock()
		err := c.serf.SetTags(c.tags())
		c.localMu.Unlock()
		if err != nil {
			// The tags are set locally either way; only the wait for the
			// broadcast timed out, and gossip carries them on.
			c.log.Debug("update tags", "err", err)
		}
	}
}

// reapLoop drops deregistration tombstones once they are older than the TTL.
func (c *Cluster) reapLoop() {
	defer c.wg.Done()
	every := min(c.cfg.TombstoneTTL/10, c.cfg.EntryTombstoneTTL/10, time.Hour)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
			if n := c.catalog.reapTombstones(c.cfg.TombstoneTTL); n > 0 {
				c.log.Debug("reaped tombstones", "count", n)
			}
			if n := c.reapEntryTombstones(c.cfg.EntryTombstoneTTL, time.Now()); n > 0 {
				c.log.Debug("reaped config entry tombstones", "count", n)
			}
		}
	}
}

// joinLoop joins the seeds, retrying with exponential backoff until one
// answers. Each distinct failure is logged once.
func (c *Cluster) joinLoop(seeds []string) {
	defer c.wg.Done()
	backoff := c.cfg.JoinBackoff
	logged := make(map[string]bool)
	for {
		n, err := c.serf.Join(seeds, true)
		if n > 0 {
			c.log.Info("joined cluster", "seeds", seeds, "contacted", n)
			c.watchIsolation(seeds)
			return
		}
		msg := "no seed answered"
		if err != nil {
			msg = joinHint(oneLine(err))
		}
		if !logged[msg] {
			logged[msg] = true
			c.log.Warn("join failed, retrying", "seeds", seeds, "err", msg)
		}
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.JoinBackoffMax)
	}
}

// watchIsolation joins the seeds again whenever this agent finds itself
// without a live peer: after a partition longer than ReapAfter both sides
// have forgotten each other, and serf's own reconnects have stopped.
func (c *Cluster) watchIsolation(seeds []string) {
	every := max(c.cfg.JoinBackoffMax, c.cfg.Timing.ProbeInterval)
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(every):
		}
		alive := 0
		for _, m := range c.catalog.Members() {
			if m.Status == StatusAlive && m.Name != c.cfg.NodeName {
				alive++
			}
		}
		if alive > 0 {
			continue
		}
		if n, err := c.serf.Join(seeds, true); n > 0 {
			c.log.Info("no live peer left: rejoined through the seeds", "seeds", seeds, "contacted", n)
		} else if err != nil {
			c.log.Debug("rejoin failed", "seeds", seeds, "err", oneLine(err))
		}
	}
}

// Join contacts the given gossip addresses once and reports how many answered.
func (c *Cluster) Join(addrs []string) (int, error) {
	n, err := c.serf.Join(addrs, true)
	if n == 0 && err != nil {
		return 0, fmt.Errorf("gossip: join %v: %s", addrs, joinHint(oneLine(err)))
	}
	return n, nil
}

// oneLine flattens an error from serf (often a multi-line multierror) into
// one line.
func oneLine(err error) string {
	s := strings.TrimSpace(err.Error())
	if i := strings.Index(s, "error occurred:"); i >= 0 && i < 12 {
		s = strings.TrimSpace(s[i+len("error occurred:"):])
	}
	s = strings.NewReplacer("\n\t* ", "; ", "\n\n", "", "\n", "; ", "\t", " ", "* ", "").Replace(s)
	return strings.TrimSpace(s)
}

// joinHint explains the encryption failures, which memberlist words from
// the inside.
func joinHint(msg string) string {
	switch {
	case strings.Contains(msg, "no installed keys could decrypt"):
		return msg + " (the cluster uses a different gossip key: check --encrypt)"
	case strings.Contains(msg, "not encrypted"), strings.Contains(msg, "encryption is configured"), strings.Contains(msg, "encryption is not configured"):
		return msg + " (one side has a gossip key and the other not: check --encrypt)"
	}
	return msg
}

// Members returns every member serf knows, left and failed ones included.
func (c *Cluster) Members() []Member {
	ms := c.serf.Members()
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = convertMember(m)
	}
	return out
}

// LocalMember returns the local agent as a member.
func (c *Cluster) LocalMember() Member {
	return convertMember(c.serf.LocalMember())
}

// Leave broadcasts a graceful departure and waits for it to propagate.
func (c *Cluster) Leave() error {
	if c.serf == nil {
		return nil
	}
	if err := c.serf.Leave(); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossiping and the catalog listener and waits for every
// goroutine of the cluster. Without Leave first, peers see a failure. It is
// safe to call more than once.
func (c *Cluster) Shutdown() error {
	var err error
	c.shutdownOnce.Do(func() {
		close(c.stop)
		c.cancel()
		if c.serf != nil {
			err = c.serf.Shutdown()
		}
		if c.ln != nil {
			c.ln.Close()
		}
		c.wg.Wait()
	})
	return err
}

// Errors of ForceLeave.
var (
	ErrUnknownMember = errors.New("gossip: no such member")
	ErrMemberAlive   = errors.New("gossip: member is alive")
)

// ForceLeave marks a failed member left across the cluster, as if it had
// left gracefully: its instances go at once instead of after the reap
// time. prune also forgets the member itself at once. An alive or leaving
// member is refused with ErrMemberAlive, this agent included: it would
// refute the leave and stay, so the call would only look like it worked.
func (c *Cluster) ForceLeave(name string, prune bool) error {
	var status MemberStatus
	found := false
	for _, m := range c.serf.Members() {
		if m.Name == name {
			status, found = MemberStatus(m.Status), true
			break
		}
	}
	switch {
	case !found:
		return fmt.Errorf("%w: %q", ErrUnknownMember, name)
	case name == c.cfg.NodeName || status == StatusAlive || status == StatusLeaving:
		return fmt.Errorf("%w: %q is %s", ErrMemberAlive, name, status)
	case status == StatusLeft && !prune:
		return nil
	}
	var err error
	if prune {
		err = c.serf.RemoveFailedNodePrune(name)
	} else {
		err = c.serf.RemoveFailedNode(name)
	}
	if err != nil {
		return fmt.Errorf("gossip: force-leave %s: %w", name, err)
	}
	return nil
}
