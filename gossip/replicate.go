package gossip

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// pusher is the fast path: it hands new deltas to the senders of a few
// peers at once (see pushPeers). Changes that arrive while it works are
// coalesced into its next round, and each sender coalesces again what its
// peer has not taken yet: one message per peer for a burst.
type pusher struct {
	c    *Cluster
	kick chan struct{}

	mu      sync.Mutex        // guards pending and pendingEntries
	pending map[string]uint64 // owner → oldest version peers may hold
	// pendingEntries are config entries changed here since the last round.
	pendingEntries map[EntryKey]bool
}

const (
	pushRetryFirst = 250 * time.Millisecond
	pushRetryMax   = 30 * time.Second
)

func newPusher(c *Cluster) *pusher {
	return &pusher{c: c, kick: make(chan struct{}, 1), pending: make(map[string]uint64),
		pendingEntries: make(map[EntryKey]bool)}
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
			p.c.send.retry(now)
		}
	}
}

// round hands everything pending to the senders of Fanout alive peers (see
// pushPeers). It never waits for a peer: each sender sends on its own.
func (p *pusher) round() {
	p.mu.Lock()
	pending := p.pending
	p.pending = make(map[string]uint64)
	var entries []EntryKey
	for k := range p.pendingEntries { // config entries change rarely: most rounds have none
		entries = append(entries, k)
	}
	if len(entries) > 0 {
		p.pendingEntries = make(map[EntryKey]bool)
	}
	p.mu.Unlock()
	if len(pending) == 0 && len(entries) == 0 {
		return
	}
	for _, addr := range p.c.pushPeers(p.c.cfg.Fanout) {
		p.c.send.get(addr).push(pending, entries)
	}
}

// exchange sends one peer what its sender took from its queue: the
// records changed after the given versions and the config entries, then
// the pulls. The records are read now, so the peer gets the latest state.
func (c *Cluster) exchange(addr string, pushes map[string]uint64, entries map[EntryKey]bool, wants map[string]uint64) error {
	m := &message{Type: msgPush, From: c.cfg.NodeName}
	for owner, since := range pushes {
		if d, ok := c.catalog.deltaSince(owner, since); ok {
			m.Deltas = append(m.Deltas, d)
		}
	}
	if len(entries) > 0 {
		keys := make([]EntryKey, 0, len(entries))
		for k := range entries {
			keys = append(keys, k)
		}
		m.Entries = c.entriesFor(keys)
	}
	if len(m.Deltas) > 0 || len(m.Entries) > 0 {
		c.stats.pushesOut.Add(1)
		if _, err := c.call(addr, m); err != nil {
			return fmt.Errorf("push to %s: %w", addr, err)
		}
	}
	var ws []Want
	for owner, version := range wants {
		if since := c.catalog.Version(owner); since < version {
			ws = append(ws, Want{Owner: owner, Since: since})
		}
	}
	if len(ws) == 0 {
		return nil
	}
	c.stats.pulls.Add(1)
	reply, err := c.call(addr, &message{Type: msgPull, From: c.cfg.NodeName, Wants: ws})
	if err != nil {
		return fmt.Errorf("pull from %s: %w", addr, err)
	}
	for i := range reply.Deltas {
		if res, _ := c.admit(&reply.Deltas[i], addr); res == applyApplied {
			// Peers that missed it too get it without waiting for their own pull.
			c.push.enqueue(reply.Deltas[i].Owner, wantsSince(ws, reply.Deltas[i].Owner))
		}
	}
	return nil
}

// stallAfter is how long an exchange may take before its peer counts as
// not answering: as late as a failed probe, twice over.
func (c *Cluster) stallAfter() time.Duration {
	return max(2*c.cfg.Timing.ProbeTimeout, 100*time.Millisecond)
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
	version uint64    // the owner's version to reach
	hint    string    // a peer known to hold it
	tries   int       // peers asked so far
	asked   time.Time // when the last was asked
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

// round hands every outstanding want to a peer's sender: the owner's when
// it is alive, on every other try (or when it is not) the hinted or a
// random peer's. A want already asked of a peer that has not answered yet
// waits for stallAfter before it is asked elsewhere.
func (p *puller) round() {
	members := make(map[string]Member)
	for _, m := range p.c.catalog.Members() {
		members[m.Name] = m
	}
	now := time.Now()
	type ask struct {
		owner, addr string
		version     uint64
	}
	var asks []ask
	p.mu.Lock()
	for owner, w := range p.wants {
		if p.c.catalog.Version(owner) >= w.version {
			delete(p.wants, owner)
			continue
		}
		if now.Sub(w.asked) < p.c.stallAfter() {
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
			w.asked = now
			asks = append(asks, ask{owner, addr, w.version})
		}
	}
	p.mu.Unlock()
	for _, a := range asks {
		p.c.send.get(a.addr).pull(a.owner, a.version)
	}
}

// askAgain asks for a round soon for wants whose pull failed: it may go
// to another peer at once.
func (p *puller) askAgain(owners map[string]uint64) {
	p.mu.Lock()
	for owner := range owners {
		if w := p.wants[owner]; w != nil {
			w.asked = time.Time{}
		}
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func wantsSince(wants []Want, owner string) uint64 {
	for _, w := range wants {
		if w.Owner == owner {
			return w.Since
		}
	}
	return 0
}

// pushPeers returns the catalog addresses of the peers to push a new delta
// to: the local agent's two neighbours in the ring of alive members ordered
// by name (its successor, and with n ≥ 2 its predecessor), then random
// others, n in all, those that answer first.
//
// Random peers alone do not reach everyone: when each agent pushes what is
// new to it once, to n random peers, about e^-n of the cluster (5% at n=3)
// hears nothing and waits for the backstop, seconds instead of
// milliseconds; at 50 agents most registrations missed someone. Since
// every agent that learns something new also pushes it to its neighbours,
// the delta goes round the whole ring even where the random pushes miss:
// everyone gets it, as long as membership views agree, in about log(N)
// hops.
//
// Both directions, because one way round a single silent member cuts the
// ring. A member that black-holes packets looks alive until failure
// detection says otherwise, and nobody knows it is silent before an
// exchange with it hangs: the first delta after it fell silent would stop
// there, and its successor would hear of the delta only if a random push
// happened to pick it, or else from the backstop seconds later (3.2 s in
// one netns run with five agents). With pushes going both ways, the ring
// minus any one member is still a path through all the others.
//
// A neighbour that cannot take the delta now (an exchange with it is in
// flight, as one with a silent member is until the TCP timeout, or the
// last one failed) would hold the ring there,
// so the first member beyond it, in the same direction, that can is added
// too; the busy one keeps the delta in its queue and gets it when it
// answers. The random peers are chosen among those that can take it now,
// when there are enough.
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
	healthy := func(i int) bool { return c.send.ready(ring[i].RPCAddr()) }
	var addrs []string
	chosen := make(map[int]bool)
	budget := n // grows by one for each member added past a busy neighbour
	add := func(i int) bool {
		if chosen[i] {
			return false
		}
		chosen[i] = true
		addrs = append(addrs, ring[i].RPCAddr())
		return true
	}
	// neighbour adds the member at index first and, if it is busy, the
	// first one after it, stepping by step, that is not.
	neighbour := func(first, step int) {
		add(first)
		if healthy(first) {
			return
		}
		for k := 1; k < len(ring); k++ {
			if i := mod(first+k*step, len(ring)); healthy(i) {
				if add(i) {
					budget++
				}
				return
			}
		}
	}
	succ := sort.Search(len(ring), func(i int) bool { return ring[i].Name > c.cfg.NodeName }) % len(ring)
	neighbour(succ, 1)
	if n >= 2 {
		neighbour(mod(succ-1, len(ring)), -1)
	}
	others := make([]int, 0, len(ring))
	for i := range ring {
		if !chosen[i] {
			others = append(others, i)
		}
	}
	rand.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	var silent []int
	for _, i := range others {
		if len(addrs) >= budget {
			break
		}
		if healthy(i) {
			add(i)
		} else {
			silent = append(silent, i)
		}
	}
	for _, i := range silent { // only when too few answer
		if len(addrs) >= budget {
			break
		}
		add(i)
	}
	return addrs
}

// mod is i modulo n, never negative.
func mod(i, n int) int {
	return ((i % n) + n) % n
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
