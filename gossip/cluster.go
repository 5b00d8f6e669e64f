package gossip

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"strconv"
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
	catalog *Catalog
	push    *pusher
	pull    *puller
	stats   stats

	serf    *serf.Serf
	events  chan serf.Event
	ln      net.Listener
	rpcAddr string // advertised catalog address
	tagKick chan struct{}

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
		catalog: newCatalog(cfg.NodeName, time.Now),
		events:  make(chan serf.Event, 4096),
		tagKick: make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	c.push = newPusher(c)
	c.pull = newPuller(c)
	return c, nil
}

// Catalog is the replicated catalog. It is usable before Start.
func (c *Cluster) Catalog() *Catalog { return c.catalog }

// Stats returns the traffic counters of the node-to-node catalog path.
func (c *Cluster) Stats() Stats { return c.stats.snapshot() }

// RPCAddr is the advertised address of the node-to-node catalog path.
func (c *Cluster) RPCAddr() string { return c.rpcAddr }

// Start binds the catalog listener and the gossip ports, then joins the seeds
// in the background, retrying with backoff until one answers.
func (c *Cluster) Start() error {
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
	ln, err := net.Listen("tcp", rpcBind)
	if err != nil {
		return fmt.Errorf("gossip: catalog listener: %w", err)
	}
	c.ln = ln
	rpcPort := ln.Addr().(*net.TCPAddr).Port
	c.rpcAddr = net.JoinHostPort(advIP.String(), strconv.Itoa(rpcPort))

	sc := c.serfConfig(bindIP, bindPort, advIP, advPort)
	s, err := serf.Create(sc)
	if err != nil {
		ln.Close()
		return fmt.Errorf("gossip: start serf on %s: %w", c.cfg.BindAddr, err)
	}
	c.serf = s
	c.catalog.setMember(convertMember(s.LocalMember()))

	c.wg.Add(6)
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
		"advertise", net.JoinHostPort(advIP.String(), strconv.Itoa(advPort)), "catalog", c.rpcAddr)
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
	logger := newStdLogger(c.log, "memberlist")
	ml.Logger = logger

	sc := serf.DefaultConfig()
	sc.NodeName = c.cfg.NodeName
	sc.Tags = c.tags()
	sc.EventCh = c.events
	sc.MemberlistConfig = ml
	sc.Logger = newStdLogger(c.log, "serf")
	sc.ReconnectTimeout = c.cfg.ReapAfter
	sc.TombstoneTimeout = c.cfg.ReapAfter
	sc.SnapshotPath = c.cfg.SnapshotPath
	if t.ProbeInterval < time.Second {
		sc.ReapInterval = 10 * t.ProbeInterval
		sc.ReconnectInterval = 5 * t.ProbeInterval
		sc.LeavePropagateDelay = 2 * t.GossipInterval
	}
	return sc
}

// tags returns the local member's serf tags as of now.
func (c *Cluster) tags() map[string]string {
	tags := maps.Clone(c.cfg.Tags)
	if tags == nil {
		tags = make(map[string]string)
	}
	tags[TagRole] = "shoal"
	tags[TagDatacenter] = c.cfg.Datacenter
	tags[TagNodeID] = c.cfg.NodeID
	tags[TagRPC] = c.rpcAddr
	tags[TagVersion] = strconv.FormatUint(c.catalog.Version(c.cfg.NodeName), 10)
	return tags
}

// Publish installs the local agent's own catalog, a full delta of its
// records (tombstones included) at a version above the last one, and starts
// spreading the change. Reads of the catalog see it when Publish returns.
func (c *Cluster) Publish(d Delta) error {
	d.Owner, d.Full = c.cfg.NodeName, true
	prev, ok := c.catalog.publishLocal(&d)
	if !ok {
		return fmt.Errorf("gossip: publish version %d: not above %d", d.Version, prev)
	}
	c.push.enqueue(d.Owner, prev)
	select {
	case c.tagKick <- struct{}{}:
	default:
	}
	return nil
}

// tagLoop advertises the local catalog version in the serf tags, at most once
// per TagInterval so that bursts of changes cost one broadcast.
func (c *Cluster) tagLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case <-c.tagKick:
		}
		if err := c.serf.SetTags(c.tags()); err != nil {
			c.log.Warn("update tags failed", "err", err)
		}
		select {
		case <-c.stop:
			return
		case <-time.After(c.cfg.TagInterval):
		}
	}
}

// reapLoop drops deregistration tombstones once they are older than the TTL.
func (c *Cluster) reapLoop() {
	defer c.wg.Done()
	every := min(c.cfg.TombstoneTTL/10, time.Hour)
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
			return
		}
		if err == nil {
			err = errors.New("no seed answered")
		}
		if msg := err.Error(); !logged[msg] {
			logged[msg] = true
			c.log.Warn("join failed, retrying", "seeds", seeds, "err", err)
		}
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.JoinBackoffMax)
	}
}

// Join contacts the given gossip addresses once and reports how many answered.
func (c *Cluster) Join(addrs []string) (int, error) {
	n, err := c.serf.Join(addrs, true)
	if n == 0 && err != nil {
		return 0, fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return n, nil
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
