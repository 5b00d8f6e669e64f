package gossip

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// The gossip encryption keys protect both of the agent's paths with the same
// keyring: memberlist encrypts gossip (AES-GCM), and keyringSealer seals
// every frame of the node-to-node catalog path with the primary key,
// accepting any installed key, so that rotation works the same way on both.

// ParseKey decodes a base64 gossip key and checks its length (16, 24 or 32
// bytes: AES-128, -192 or -256).
func ParseKey(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("key is not valid base64: %w", err)
	}
	if err := memberlist.ValidateKey(key); err != nil {
		return nil, fmt.Errorf("key of %d bytes: want 16, 24 or 32", len(key))
	}
	return key, nil
}

// NewKey returns a new random 32-byte key, base64-encoded.
func NewKey() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(key), nil
}

// LoadKeyringFile reads a keyring persisted by serf (a JSON list of base64
// keys, the primary first). It returns nil when the file does not exist.
func LoadKeyringFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []string
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	for _, k := range keys {
		if _, err := ParseKey(k); err != nil {
			return nil, fmt.Errorf("keyring %s: %w", path, err)
		}
	}
	return keys, nil
}

// newKeyring builds memberlist's keyring from base64 keys, the first one
// primary; nil when there are none.
func newKeyring(keys []string) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var raw [][]byte
	for _, k := range keys {
		key, err := ParseKey(k)
		if err != nil {
			return nil, err
		}
		raw = append(raw, key)
	}
	return memberlist.NewKeyring(raw, raw[0])
}

// Sealed frame layout: one version byte, 12 bytes of nonce, then AES-GCM
// ciphertext of (8 bytes of send time in Unix ns ‖ payload). The send time
// and the nonce let the receiver refuse replays.
const (
	sealVersion    byte = 1
	nonceSize           = 12
	sealOverhead        = 1 + nonceSize + 16 + 8
	replayWindow        = 2 * time.Minute
	maxNonceCache       = 1 << 20
	sealAdditional      = "shoal-catalog-v1"
)

// keyringSealer seals catalog frames with the keyring's primary key and opens
// them with any installed key. It refuses frames older than replayWindow
// (or as far in the future) and frames whose nonce it has seen.
type keyringSealer struct {
	kr  *memberlist.Keyring
	now func() time.Time

	mu     sync.Mutex // guards seen
	seen   map[[nonceSize]byte]int64
	pruned int64
}

func newKeyringSealer(kr *memberlist.Keyring) *keyringSealer {
	return &keyringSealer{kr: kr, now: time.Now, seen: make(map[[nonceSize]byte]int64)}
}

func gcmFor(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal implements Sealer.
func (s *keyringSealer) Seal(plain []byte) ([]byte, error) {
	aead, err := gcmFor(s.kr.GetPrimaryKey())
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+nonceSize, sealOverhead+len(plain))
	out[0] = sealVersion
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		return nil, err
	}
	msg := make([]byte, 8, 8+len(plain))
	binary.BigEndian.PutUint64(msg, uint64(s.now().UnixNano()))
	msg = append(msg, plain...)
	return aead.Seal(out, out[1:1+nonceSize], msg, []byte(sealAdditional)), nil
}

// Open implements Sealer.
func (s *keyringSealer) Open(sealed []byte) ([]byte, error) {
	if len(sealed) < sealOverhead || sealed[0] != sealVersion {
		return nil, errors.New("not a sealed catalog frame")
	}
	var nonce [nonceSize]byte
	copy(nonce[:], sealed[1:1+nonceSize])
	var msg []byte
	var err error
	for _, key := range s.kr.GetKeys() {
		aead, e := gcmFor(key)
		if e != nil {
			return nil, e
		}
		if msg, err = aead.Open(nil, nonce[:], sealed[1+nonceSize:], []byte(sealAdditional)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, errors.New("no installed key opens the frame (wrong gossip key?)")
	}
	now := s.now().UnixNano()
	sent := int64(binary.BigEndian.Uint64(msg))
	if d := now - sent; d > int64(replayWindow) || d < -int64(replayWindow) {
		return nil, fmt.Errorf("frame sent %v ago is outside the replay window of %v", time.Duration(d).Round(time.Second), replayWindow)
	}
	if err := s.remember(nonce, now); err != nil {
		return nil, err
	}
	return msg[8:], nil
}

// remember records a nonce, refusing one seen within the replay window.
func (s *keyringSealer) remember(nonce [nonceSize]byte, now int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now-s.pruned > int64(replayWindow) || len(s.seen) >= maxNonceCache {
		for n, at := range s.seen {
			if now-at > 2*int64(replayWindow) {
				delete(s.seen, n)
			}
		}
		s.pruned = now
	}
	if _, dup := s.seen[nonce]; dup {
		return errors.New("replayed frame refused")
	}
	if len(s.seen) >= maxNonceCache {
		return errors.New("too many frames in the replay window")
	}
	s.seen[nonce] = now
	return nil
}

var _ Sealer = (*keyringSealer)(nil)

// ErrNoEncryption is returned by Keyring on an agent started without keys.
var ErrNoEncryption = errors.New("gossip: encryption is not enabled on this agent (start it with --encrypt)")

// KeyringResponse is the outcome of a cluster-wide keyring operation.
type KeyringResponse struct {
	// Keys maps each base64 key to how many members have it installed.
	Keys map[string]int
	// PrimaryKeys maps each base64 primary key to how many members use it.
	PrimaryKeys map[string]int
	// NumNodes, NumResp and NumErr count members asked, answers and errors.
	NumNodes, NumResp, NumErr int
	// Messages holds each failing member's error.
	Messages map[string]string
}

// KeyringOp is a keyring operation across the cluster.
type KeyringOp string

// Keyring operations.
const (
	KeyList    KeyringOp = "list"
	KeyInstall KeyringOp = "install"
	KeyUse     KeyringOp = "use"
	KeyRemove  KeyringOp = "remove"
)

// keyringQueryOptions has each member's answer also relayed through two
// other members, so that one lost UDP packet does not lose the answer.
var keyringQueryOptions = &serf.KeyRequestOptions{RelayFactor: 2}

// keyringAttempts is how often a keyring query is asked when answers are
// missing but no member refused.
const keyringAttempts = 3

// Keyring runs a keyring operation on every member (through serf queries)
// and reports what each answered. Rotation is install, use, remove.
func (c *Cluster) Keyring(op KeyringOp, key string) (*KeyringResponse, error) {
	if c.serf == nil {
		return nil, errors.New("gossip: not started")
	}
	if c.keyring == nil {
		return nil, ErrNoEncryption
	}
	if op != KeyList {
		if _, err := ParseKey(key); err != nil {
			return nil, err
		}
	}
	km := c.serf.KeyManager()
	var resp *serfKeyResponse
	var err error
	// A member whose answer missed the query's deadline (a busy machine)
	// refused nothing: the operations are idempotent, so the query is
	// asked again, up to keyringAttempts times, before the step fails.
	c.localMu.Lock() // see Cluster.localMu
	defer c.localMu.Unlock()
	for attempt := 1; ; attempt++ {
		switch op {
		case KeyList:
			resp, err = km.ListKeysWithOptions(keyringQueryOptions)
		case KeyInstall:
			resp, err = km.InstallKeyWithOptions(key, keyringQueryOptions)
		case KeyUse:
			resp, err = km.UseKeyWithOptions(key, keyringQueryOptions)
		case KeyRemove:
			resp, err = km.RemoveKeyWithOptions(key, keyringQueryOptions)
		default:
			return nil, fmt.Errorf("gossip: unknown keyring operation %q", op)
		}
		if err == nil || resp == nil || resp.NumErr > 0 || resp.NumResp >= resp.NumNodes || attempt == keyringAttempts {
			break
		}
		c.log.Warn("keyring: members did not answer in time, asking again",
			"op", string(op), "answered", resp.NumResp, "members", resp.NumNodes)
	}
	if resp == nil {
		return nil, fmt.Errorf("gossip: keyring %s: %w", op, err)
	}
	out := &KeyringResponse{
		Keys: resp.Keys, PrimaryKeys: resp.PrimaryKeys, NumNodes: resp.NumNodes,
		NumResp: resp.NumResp, NumErr: resp.NumErr, Messages: resp.Messages,
	}
	if err != nil {
		return out, fmt.Errorf("gossip: keyring %s: %w", op, err)
	}
	return out, nil
}

// serfKeyResponse names serf's type here only, so that it stays out of the
// package's API.
type serfKeyResponse = serf.KeyResponse
