package gossip

import (
	"sync"
	"time"
)

// sender is the catalog path to one peer. Everything this agent has to tell
// or ask that peer (pushes of deltas and config entries, their retries,
// pulls) goes through the peer's sender, one exchange at a time, on a
// goroutine of its own while it has work: a peer that is slow, or that
// black-holes its packets until failure detection catches up, holds up its
// own queue and nothing else.
//
// The queue coalesces and is bounded: per owner it keeps the oldest version
// the peer may hold, per config entry a flag, and per owner the version a
// pull should reach. The records are read from the catalog when the
// message is built, so the peer gets the latest state whatever the rate of
// changes, and the queue never holds more than one item per owner and per
// config entry.
//
// After a failed exchange the pushes stay queued and are tried again with
// backoff while the peer is a member (see senders.retry); the pulls are
// dropped, since the puller asks another peer.
type sender struct {
	c    *Cluster
	addr string

	mu      sync.Mutex        // guards the fields below
	pushes  map[string]uint64 // owner → oldest version the peer may hold
	entries map[EntryKey]bool // config entries to push
	wants   map[string]uint64 // owner → version a pull should reach
	running bool              // a goroutine owns the queue
	// inFlight is when the exchange in flight started; zero when none.
	inFlight time.Time
	// failures counts the exchanges that failed in a row; next is when
	// the next may start, after a failure.
	failures int
	next     time.Time
}

// senders holds the sender of every peer this agent talks to.
type senders struct {
	c *Cluster

	mu     sync.Mutex // guards byAddr
	byAddr map[string]*sender
}

func newSenders(c *Cluster) *senders {
	return &senders{c: c, byAddr: make(map[string]*sender)}
}

// get returns the sender of the peer serving addr, creating it.
func (ss *senders) get(addr string) *sender {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byAddr[addr]
	if s == nil {
		s = &sender{c: ss.c, addr: addr, pushes: make(map[string]uint64),
			entries: make(map[EntryKey]bool), wants: make(map[string]uint64)}
		ss.byAddr[addr] = s
	}
	return s
}

// ready reports whether what is handed to the sender of the peer at addr
// now goes out now: no exchange is in flight (else it waits behind it,
// for as long as a black hole holds it) and the last did not fail. A peer
// never talked to is ready.
func (ss *senders) ready(addr string) bool {
	ss.mu.Lock()
	s := ss.byAddr[addr]
	ss.mu.Unlock()
	if s == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failures == 0 && s.inFlight.IsZero()
}

// push queues owners' records (owner → oldest version the peer may hold)
// and config entries for the peer.
func (s *sender) push(owners map[string]uint64, entries []EntryKey) {
	s.mu.Lock()
	for owner, since := range owners {
		if cur, ok := s.pushes[owner]; !ok || since < cur {
			s.pushes[owner] = since
		}
	}
	for _, k := range entries {
		s.entries[k] = true
	}
	s.startLocked(time.Now())
	s.mu.Unlock()
}

// pull queues a pull of owner's records up to version from the peer.
func (s *sender) pull(owner string, version uint64) {
	s.mu.Lock()
	s.wants[owner] = max(s.wants[owner], version)
	s.startLocked(time.Now())
	s.mu.Unlock()
}

// startLocked starts the goroutine that drains the queue, unless one runs
// or the peer is in backoff. Call with mu held.
func (s *sender) startLocked(now time.Time) {
	if s.running || now.Before(s.next) || s.idleLocked() {
		return
	}
	select {
	case <-s.c.stop:
		return
	default:
	}
	s.running = true
	s.c.wg.Add(1)
	go s.run()
}

func (s *sender) idleLocked() bool {
	return len(s.pushes) == 0 && len(s.entries) == 0 && len(s.wants) == 0
}

// run drains the queue, one exchange at a time, until it is empty, the
// cluster stops or an exchange fails (then the retry tick restarts it).
func (s *sender) run() {
	defer s.c.wg.Done()
	for {
		s.mu.Lock()
		stopped := false
		select {
		case <-s.c.stop:
			stopped = true
		default:
		}
		if stopped || s.idleLocked() || time.Now().Before(s.next) {
			s.running = false
			s.mu.Unlock()
			return
		}
		pushes, entries, wants := s.pushes, s.entries, s.wants
		s.pushes, s.entries, s.wants = make(map[string]uint64), make(map[EntryKey]bool), make(map[string]uint64)
		s.inFlight = time.Now()
		s.mu.Unlock()

		err := s.c.exchange(s.addr, pushes, entries, wants)

		s.mu.Lock()
		s.inFlight = time.Time{}
		if err == nil {
			s.failures, s.next = 0, time.Time{}
			s.mu.Unlock()
			continue
		}
		s.c.log.Debug("catalog exchange failed", "peer", s.addr, "err", err)
		// The pushes wait for the retry, merged with what came meanwhile;
		// the backstop (tags and pulls) repairs whatever is still missing
		// after that. Config entries are repaired by their own exchange.
		for owner, since := range pushes {
			if cur, ok := s.pushes[owner]; !ok || since < cur {
				s.pushes[owner] = since
			}
		}
		s.failures++
		s.next = time.Now().Add(retryDelay(s.failures))
		s.mu.Unlock()
		if len(wants) > 0 {
			s.c.pull.askAgain(wants) // of someone else
		}
	}
}

// retryDelay is the backoff after the given number of failures in a row.
func retryDelay(failures int) time.Duration {
	d := pushRetryFirst
	for range failures - 1 {
		if d *= 2; d >= pushRetryMax {
			return pushRetryMax
		}
	}
	return d
}

// waiting reports whether a sender holds work that no goroutine drains.
func (ss *senders) waiting() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, s := range ss.byAddr {
		s.mu.Lock()
		w := !s.running && !s.idleLocked()
		s.mu.Unlock()
		if w {
			return true
		}
	}
	return false
}

// retry restarts the senders whose backoff is over and whose peer is
// alive, and forgets those of peers that left or are no longer members. A
// failed peer keeps its queue until it is alive again (or reaped).
func (ss *senders) retry(now time.Time) {
	if !ss.waiting() {
		return // the common case: nothing to retry, no membership to read
	}
	status := make(map[string]MemberStatus)
	for _, m := range ss.c.catalog.Members() {
		if addr := m.RPCAddr(); addr != "" {
			status[addr] = m.Status
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for addr, s := range ss.byAddr {
		st, known := status[addr]
		s.mu.Lock()
		switch {
		case !known || st == StatusLeft:
			if !s.running {
				delete(ss.byAddr, addr)
			}
			clear(s.pushes)
			clear(s.entries)
			clear(s.wants)
		case st == StatusAlive:
			s.startLocked(now)
		}
		s.mu.Unlock()
	}
}
