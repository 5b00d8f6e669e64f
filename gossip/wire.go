package gossip

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Sealer protects frames of the node-to-node catalog path. Seal must
// authenticate (and may encrypt) a frame; Open must reject anything that Seal
// did not produce with a key it holds. Implementations must be safe for
// concurrent use.
type Sealer interface {
	Seal(plain []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// Frame layout: one byte of kind, four bytes of big-endian payload length,
// then the payload (JSON, sealed when kind is frameSealed).
const (
	framePlain  byte = 0
	frameSealed byte = 1

	// maxFrame bounds what a peer can make us allocate.
	maxFrame = 64 << 20
)

// Message types of the node-to-node path.
const (
	msgPush  = "push"  // deltas, answered by an empty reply
	msgPull  = "pull"  // wants, answered by deltas
	msgReply = "reply" // the answer to either
	// msgEntrySync carries a digest of the sender's config entries,
	// answered by nothing (the same) or every stamp the receiver holds.
	msgEntrySync = "esync"
)

// message is the one envelope of the node-to-node path.
type message struct {
	Type   string  `json:"type"`
	From   string  `json:"from"`
	Deltas []Delta `json:"deltas,omitempty"`
	Wants  []Want  `json:"wants,omitempty"`

	// Config entries (entries.go): pushed or pulled entries, the keys a
	// pull asks for, and the anti-entropy exchange's digest and stamps.
	Entries     []Entry      `json:"entries,omitempty"`
	EntryWants  []EntryKey   `json:"ewants,omitempty"`
	EntryDigest []byte       `json:"edigest,omitempty"`
	EntrySame   bool         `json:"esame,omitempty"`
	EntryStamps []entryStamp `json:"estamps,omitempty"`
}

// Want asks for an owner's records changed after Since.
type Want struct {
	Owner string `json:"owner"`
	Since uint64 `json:"since"`
}

var errPlainRefused = errors.New("plain frame refused: this agent requires sealed catalog traffic")

func writeMessage(w io.Writer, m *message, s Sealer) error {
	payload, err := json.Marshal(m)
	if err != nil {
		return err
	}
	kind := framePlain
	if s != nil {
		if payload, err = s.Seal(payload); err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		kind = frameSealed
	}
	if len(payload) > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(payload), maxFrame)
	}
	hdr := make([]byte, 5, 5+len(payload))
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	_, err = w.Write(append(hdr, payload...))
	return err
}

func readMessage(r io.Reader, s Sealer) (*message, int, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return nil, 0, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	switch {
	case hdr[0] == framePlain && s != nil:
		return nil, 0, errPlainRefused
	case hdr[0] == frameSealed && s == nil:
		return nil, 0, errors.New("sealed frame, but this agent has no key")
	case hdr[0] != framePlain && hdr[0] != frameSealed:
		return nil, 0, fmt.Errorf("unknown frame kind %d", hdr[0])
	}
	// The payload grows as its bytes arrive, so a header that announces a
	// large frame costs nothing until the peer actually sends it.
	payload, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, 0, err
	}
	if len(payload) < int(n) {
		return nil, 0, io.ErrUnexpectedEOF
	}
	if s != nil {
		if payload, err = s.Open(payload); err != nil {
			return nil, 0, fmt.Errorf("open sealed frame: %w", err)
		}
	}
	m, err := decodeMessage(payload)
	return m, 5 + int(n), err
}

// decodeMessage parses and checks a message from a peer (see
// validateMessage for the bounds). It never panics.
func decodeMessage(b []byte) (*message, error) {
	if n := countItems(b); n > maxItems {
		return nil, fmt.Errorf("decode message: %d JSON items exceed %d", n, maxItems)
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	switch m.Type {
	case msgPush, msgPull, msgReply, msgEntrySync:
	default:
		return nil, fmt.Errorf("unknown message type %q", m.Type)
	}
	if err := validateMessage(&m); err != nil {
		return nil, err
	}
	return &m, nil
}
