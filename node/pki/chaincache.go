package pki

import (
	"crypto/ecdsa"
	"sync"
	"time"
)

// maxCachedSigners bounds the node CAs a bundle remembers as verified: far
// more nodes than a mesh has, at about 200 bytes each.
const maxCachedSigners = 4096

// signer is a node CA whose chain to a root verified: what VerifySigned
// needs to check a signature without verifying the chain again.
type signer struct {
	node string
	pub  *ecdsa.PublicKey
	// notBefore and notAfter bound the validity of the whole chain.
	notBefore, notAfter time.Time
}

func (s signer) validAt(now time.Time) bool {
	return !now.Before(s.notBefore) && !now.After(s.notAfter)
}

// chainCache remembers verified signers by the SHA-256 of their
// certificate. It is safe for concurrent use; a nil cache remembers
// nothing.
type chainCache struct {
	max int

	mu      sync.RWMutex // guards signers
	signers map[[32]byte]signer
}

func newChainCache(max int) *chainCache {
	return &chainCache{max: max, signers: make(map[[32]byte]signer)}
}

func (c *chainCache) get(sum [32]byte) (signer, bool) {
	if c == nil {
		return signer{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.signers[sum]
	return s, ok
}

// put remembers s. When the cache is full it forgets one entry first:
// map iteration starts at a random entry, so an adversary cannot choose
// which one.
func (c *chainCache) put(sum [32]byte, s signer) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.signers[sum]; !ok && len(c.signers) >= c.max {
		for k := range c.signers {
			delete(c.signers, k)
			break
		}
	}
	c.signers[sum] = s
}

func (c *chainCache) remove(sum [32]byte) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.signers, sum)
}

func (c *chainCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.signers)
}
