package gossip

import (
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// pusher is the fast path: it sends new deltas to a few random peers at
// once. Changes that arrive while a round is in flight are coalesced into the
// next round, one message per peer.
type pusher struct {
	c    *Cluster
	kick chan struct{}

	mu      sync.Mutex        // guards pending and pendingEntries
	pending map[string]uint64 // owner → oldest version peers may hold
	// pendingEntries are config entries changed here since the last round.
	pendingEntries map[EntryKey]bool

	retryMu sync.Mutex            // guards retries
	retries map[string]*pushRetry // by peer catalog address
}

// pushRetry is a push that did not reach a peer, tried again with backoff
// while the peer is a member: a partition too brief for failure detection
// would otherwise wait for the next anti-entropy round to repair.
type pushRetry struct {
	owners map[string]uint64 // owner → oldest version the peer may hold
	next   time.Time
	delay  time.Duration
}

const (
	pushRetryFirst = 250 * time.Millisecond
	pushRetryMax   = 30 * time.Second
)

func newPusher(c *Cluster) *pusher {
	return &pusher{c: c, kick: make(chan struct{}, 1), pending: make(map[string]uint64),
		pendingEntries: make(map[EntryKey]bool), retries: make(map[string]*pushRetry)}
}

// enqueueEntries schedules a push of the current state of config entries.
// A push that misses a peer is not retried: the entry exchange of the next
// SyncInterval repairs it.
func (p *pusher) enqueueEntries(keys ...EntryKey) {
	p.mu.Lock()
	for _, k := range keys {
		p.pendingEntries[k] = true
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// enqueue schedules a push of owner's records changed after since.
func (p *pusher) enqueue(owner string, since uint64) {
	p.mu.Lock()
	if cur, ok := p.pending[owner]; !ok || since < cur {
		p.pending[owner] = since
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *pusher) run() {
	defer p.c.wg.Done()
	tick := time.NewTicker(pushRetryFirst)
	defer tick.Stop()
	for {
		select {
		case <-p.c.stop:
			return
		case <-p.kick:
			p.round()
		case now := <-tick.C:
			p.retryDue(now)
		}
	}
}

// scheduleRetry remembers that a push of these owners missed addr.
func (p *pusher) scheduleRetry(addr string, owners map[string]uint64) {
	p.retryMu.Lock()
	defer p.retryMu.Unlock()
	r := p.retries[addr]
	if r == nil {
		r = &pushRetry{owners: make(map[string]uint64), delay: pushRetryFirst}
		p.retries[addr] = r
		r.next = time.Now().Add(r.delay)
	}
	for owner, since := range owners {
		if cur, ok := r.owners[owner]; !ok || since < cur {
			r.owners[owner] = since
		}
	}
}

// retryDue sends the retries whose time has come, to peers that are still
// members; a peer that left or was reaped is forgotten.
func (p *pusher) retryDue(now time.Time) {
	p.retryMu.Lock()
	if len(p.retries) == 0 {
		p.retryMu.Unlock()
		return
	}
	alive := make(map[string]MemberStatus)
	for _, m := range p.c.catalog.Members() {
		alive[m.RPCAddr()] = m.Status
	}
	due := make(map[string]map[string]uint64)
	for addr, r := range p.retries {
		status, known := alive[addr]
		switch {
		case !known || status == StatusLeft:
			delete(p.retries, addr)
		case status == StatusAlive && !now.Before(r.next):
			due[addr] = r.owners
			delete(p.retries, addr)
		}
	}
	p.retryMu.Unlock()
	for addr, owners := range due {
		m := &message{Type: msgPush, From: p.c.cfg.NodeName}
		for owner, since := range owners {
			if d, ok := p.c.catalog.deltaSince(owner, since); ok {
				m.Deltas = append(m.Deltas, d)
			}
		}
		if len(m.Deltas) == 0 {
			continue
		}
		p.c.stats.pushesOut.Add(1)
		if _, err := p.c.call(addr, m); err != nil {
			p.scheduleRetry(addr, owners)
			p.retryMu.Lock()
			if r := p.retries[addr]; r != nil {
				r.delay = min(2*r.delay, pushRetryMax)
				r.next = now.Add(r.delay)
			}
			p.retryMu.Unlock()
		}
	}
}

// round sends everything pending to Fanout alive peers in parallel (see
// pushPeers).
func (p *pusher) round() {
	p.mu.Lock()
	pending := p.pending
	p.pending = make(map[string]uint64)
	var pendingEntries map[EntryKey]bool
	if len(p.pendingEntries) > 0 { // config entries change rarely: most rounds have none
		pendingEntries, p.pendingEntries = p.pendingEntries, make(map[EntryKey]bool)
	}
	p.mu.Unlock()

	m := &message{Type: msgPush, From: p.c.cfg.NodeName}
	for owner, since := range pending {
		if d, ok := p.c.catalog.deltaSince(owner, since); ok {
			m.Deltas = append(m.Deltas, d)
		}
	}
	if len(pendingEntries) > 0 {
		keys := make([]EntryKey, 0, len(pendingEntries))
		for k := range pendingEntries {
			keys = append(keys, k)
		}
		m.Entries = p.c.entriesFor(keys)
	}
	if len(m.Deltas) == 0 && len(m.Entries) == 0 {
		return
	}
	peers := p.c.pushPeers(p.c.cfg.Fanout)
	var wg sync.WaitGroup
	for _, addr := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.c.stats.pushesOut.Add(1)
			if _, err := p.c.call(addr, m); err != nil {
				// Tried again with backoff; the backstop (tags and pulls)
				// repairs whatever is still missing after that.
				p.c.log.Debug("push failed", "peer", addr, "err", err)
				p.scheduleRetry(addr, pending)
			}
		}()
	}
	wg.Wait()
}

// puller is the backstop: it fetches what members advertise in their tags
// (or what a push revealed as a gap) and the replica does not hold yet.
type puller struct {
	c    *Cluster
	kick chan struct{}

	mu    sync.Mutex // guards wants
	wants map[string]*want
}

type want struct {
	version uint64 // the owner's version to reach
	hint    string // a peer known to hold it
	tries   int
}

func newPuller(c *Cluster) *puller {
	return &puller{c: c, kick: make(chan struct{}, 1), wants: make(map[string]*want)}
}

// want asks for owner's catalog up to version; hint names a member that has it.
func (p *puller) want(owner string, version uint64, hint string) {
	if owner == p.c.cfg.NodeName || p.c.catalog.Version(owner) >= version {
		return
	}
	p.mu.Lock()
	w := p.wants[owner]
	if w == nil {
		w = &want{}
		p.wants[owner] = w
	}
	if version > w.version {
		w.version = version
	}
	if hint != "" {
		w.hint = hint
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *puller) run() {
	defer p.c.wg.Done()
	tick := time.NewTicker(p.c.cfg.SyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.c.stop:
			return
		case <-p.kick:
		case <-tick.C:
			p.sweep()
		}
		p.round()
	}
}

// sweep compares every member's advertised catalog version with the replica.
func (p *puller) sweep() {
	for _, m := range p.c.catalog.Members() {
		if m.Status == StatusLeft || m.Name == p.c.cfg.NodeName {
			continue
		}
		if v := m.CatalogVersion(); v > p.c.catalog.Version(m.Name) {
			p.want(m.Name, v, "")
		}
	}
}

// round pulls every outstanding want: from the owner when it is alive, on
// every other try (or when it is not) from the hinted or a random peer.
func (p *puller) round() {
	members := make(map[string]Member)
	for _, m := range p.c.catalog.Members() {
		members[m.Name] = m
	}
	byAddr := make(map[string][]Want)
	p.mu.Lock()
	for owner, w := range p.wants {
		since := p.c.catalog.Version(owner)
		if since >= w.version {
			delete(p.wants, owner)
			continue
		}
		addr := ""
		if m, ok := members[owner]; ok && m.Status == StatusAlive && w.tries%2 == 0 {
			addr = m.RPCAddr()
		}
		if addr == "" && w.hint != "" {
			if m, ok := members[w.hint]; ok && m.Status == StatusAlive {
				addr = m.RPCAddr()
			}
		}
		if addr == "" {
			if peers := p.c.randomPeers(1, owner); len(peers) > 0 {
				addr = peers[0]
			}
		}
		w.tries++
		if addr != "" {
			byAddr[addr] = append(byAddr[addr], Want{Owner: owner, Since: since})
		}
	}
	p.mu.Unlock()

	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for addr, wants := range byAddr {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.c.stats.pulls.Add(1)
			reply, err := p.c.call(addr, &message{Type: msgPull, From: p.c.cfg.NodeName, Wants: wants})
			if err != nil {
				p.c.log.Debug("pull failed", "peer", addr, "err", err)
				return
			}
			for i := range reply.Deltas {
				if res, _ := p.c.admit(&reply.Deltas[i], addr); res == applyApplied {
					// Peers that missed it too get it without waiting for their own pull.
					p.c.push.enqueue(reply.Deltas[i].Owner, wantsSince(wants, reply.Deltas[i].Owner))
				}
			}
		}()
	}
	wg.Wait()
}

func wantsSince(wants []Want, owner string) uint64 {
	for _, w := range wants {
		if w.Owner == owner {
			return w.Since
		}
	}
	return 0
}

// pushPeers returns the catalog addresses of up to n alive peers to push a
// new delta to: the local agent's successor in the ring of members ordered
// by name, then n-1 random others.
//
// Random peers alone do not reach everyone: when each agent pushes what is
// new to it once, to n random peers, about e^-n of the cluster (5% at n=3)
// hears nothing and waits for the backstop, seconds instead of
// milliseconds; at 50 agents most registrations missed someone. Since
// every agent that learns something new also pushes it to its successor,
// the delta goes round the whole ring even where the random pushes miss,
// one hop behind the agent before: everyone gets it, as long as membership
// views agree, in about log(N) hops.
func (c *Cluster) pushPeers(n int) []string {
	var ring []Member // ordered by name, as Members returns them
	for _, m := range c.catalog.Members() {
		if m.Status == StatusAlive && m.Name != c.cfg.NodeName && m.RPCAddr() != "" {
			ring = append(ring, m)
		}
	}
	if len(ring) == 0 || n < 1 {
		return nil
	}
	next := sort.Search(len(ring), func(i int) bool { return ring[i].Name > c.cfg.NodeName }) % len(ring)
	addrs := []string{ring[next].RPCAddr()}
	others := append(ring[:next:next], ring[next+1:]...)
	rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	for _, m := range others[:min(n-1, len(others))] {
		addrs = append(addrs, m.RPCAddr())
	}
	return addrs
}

// randomPeers returns the catalog addresses of up to n random alive peers,
// never the local agent nor exclude.
func (c *Cluster) randomPeers(n int, exclude string) []string {
	var addrs []string
	for _, m := range c.catalog.Members() {
		if m.Status != StatusAlive || m.Name == c.cfg.NodeName || m.Name == exclude || m.RPCAddr() == "" {
			continue
		}
		addrs = append(addrs, m.RPCAddr())
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	if len(addrs) > n {
		addrs = addrs[:n]
	}
	return addrs
}
