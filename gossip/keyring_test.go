package gossip

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/testdata/testutil"
)

// testKey returns a base64 32-byte key made of b.
func testKey(b byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

func mustSealer(t *testing.T, keys ...string) *keyringSealer {
	t.Helper()
	kr, err := newKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	return newKeyringSealer(kr)
}

func TestKeyringSealer(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	plain := []byte(`{"type":"reply","from":"a"}`)

	t.Run("round trip and replay", func(t *testing.T) {
		s := mustSealer(t, k1)
		sealed, err := s.Seal(plain)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, plain) {
			t.Error("sealed frame carries the plaintext")
		}
		got, err := s.Open(sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Open = %q, %v", got, err)
		}
		if _, err := s.Open(sealed); err == nil || !strings.Contains(err.Error(), "replayed") {
			t.Errorf("second Open of the same frame: %v, want a replay refusal", err)
		}
	})

	t.Run("wrong key, tampering, truncation", func(t *testing.T) {
		sealed, _ := mustSealer(t, k1).Seal(plain)
		tampered := bytes.Clone(sealed)
		tampered[len(tampered)/2] ^= 0x40
		for name, in := range map[string][]byte{
			"other key": sealed, "tampered": tampered, "truncated": sealed[:len(sealed)-1],
			"short": sealed[:sealOverhead-1], "empty": nil, "bad version": append([]byte{9}, sealed[1:]...),
		} {
			s := mustSealer(t, k2)
			if name != "other key" {
				s = mustSealer(t, k1)
			}
			if got, err := s.Open(in); err == nil {
				t.Errorf("%s: opened as %q", name, got)
			}
		}
	})

	t.Run("outside the replay window", func(t *testing.T) {
		for _, skew := range []time.Duration{-replayWindow - time.Minute, replayWindow + time.Minute} {
			old := mustSealer(t, k1)
			old.now = func() time.Time { return time.Now().Add(skew) }
			sealed, _ := old.Seal(plain)
			if _, err := mustSealer(t, k1).Open(sealed); err == nil || !strings.Contains(err.Error(), "replay window") {
				t.Errorf("frame sealed %v away: %v, want a replay-window refusal", skew, err)
			}
		}
	})

	t.Run("rotation", func(t *testing.T) {
		// A frame sealed with the old primary opens while the old key is
		// installed, and no longer once it is removed.
		old := mustSealer(t, k1)
		rotated := mustSealer(t, k1, k2)
		if err := rotated.kr.UseKey(mustDecode(t, k2)); err != nil {
			t.Fatal(err)
		}
		a, _ := old.Seal(plain)
		if _, err := rotated.Open(a); err != nil {
			t.Errorf("frame of the old primary refused while installed: %v", err)
		}
		b, _ := rotated.Seal(plain)
		if _, err := old.Open(b); err == nil {
			t.Error("a receiver without the new key opened a frame sealed with it")
		}
		if err := rotated.kr.RemoveKey(mustDecode(t, k1)); err != nil {
			t.Fatal(err)
		}
		c, _ := old.Seal(plain)
		if _, err := rotated.Open(c); err == nil {
			t.Error("frame sealed with a removed key opened")
		}
	})
}

func mustDecode(t *testing.T, k string) []byte {
	t.Helper()
	b, err := ParseKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCatalogListenerRejectsForgedAndReplayedFrames talks to a sealed
// member's catalog listener directly: frames sealed with another key, plain,
// tampered or stale frames are refused without an answer, a valid frame is
// applied once, and the same frame sent again (a replay of captured bytes)
// is refused. None of the refused frames changes the catalog.
func TestCatalogListenerRejectsForgedAndReplayedFrames(t *testing.T) {
	k1, k2 := testKey(1), testKey(2)
	logs := &testutil.LogBuffer{}
	cs := startClusterWith(t, 2, func(i int, cfg *Config) {
		cfg.Keys = []string{k1}
		if i == 1 {
			cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}
	})
	target := cs[1]

	// send writes one raw frame to the target's catalog listener and reads
	// its answer, if any.
	send := func(frame []byte) error {
		t.Helper()
		conn, err := net.DialTimeout("tcp", target.RPCAddr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(frame); err != nil {
			return err
		}
		_, _, err = readMessage(conn, mustSealer(t, k1))
		return err
	}
	seal := func(s Sealer, m *message) []byte {
		t.Helper()
		var buf bytes.Buffer
		if err := writeMessage(&buf, m, s); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	version := NextVersion(0, time.Now())
	push := &message{Type: msgPush, From: "node0", Deltas: []Delta{{
		Owner: "ghost", Version: version, Full: true,
		Records: []Record{{ID: "evil", Version: version, Service: &Service{ID: "evil", Name: "web", Port: 80}}},
	}}}

	stale := mustSealer(t, k1)
	stale.now = func() time.Time { return time.Now().Add(-10 * time.Minute) }
	valid := seal(cs[0].sealer, push)
	tampered := bytes.Clone(valid)
	tampered[len(tampered)-3] ^= 1
	node0Version := target.Catalog().Version("node0")
	for name, frame := range map[string][]byte{
		"sealed with another key": seal(mustSealer(t, k2), push),
		"plain":                   seal(nil, push),
		"tampered":                tampered,
		"sealed 10 minutes ago":   seal(stale, push),
	} {
		if err := send(frame); err == nil {
			t.Errorf("%s frame answered", name)
		}
	}
	if v := target.Catalog().Version("ghost"); v != 0 {
		t.Fatalf("a refused frame changed the catalog: ghost at version %d", v)
	}

	if err := send(valid); err != nil {
		t.Fatalf("valid frame refused: %v", err)
	}
	if v := target.Catalog().Version("ghost"); v != version {
		t.Fatalf("valid frame not applied: ghost at %d, want %d", v, version)
	}
	index := target.Catalog().Index()
	if err := send(valid); err == nil {
		t.Error("replayed frame answered")
	}
	if i := target.Catalog().Index(); i != index {
		t.Errorf("replayed frame moved the catalog index from %d to %d", index, i)
	}
	if v := target.Catalog().Version("node0"); v != node0Version {
		t.Errorf("node0 version moved from %d to %d", node0Version, v)
	}
	testutil.Wait(t, 5*time.Second, "the refusals in the log", func() bool {
		l := logs.String()
		return strings.Contains(l, "replayed frame refused") && strings.Contains(l, "no installed key opens the frame") &&
			strings.Contains(l, "plain frame refused") && strings.Contains(l, "replay window")
	})
	// The member with the key is still served.
	if _, err := cs[0].call(target.RPCAddr(), &message{Type: msgPull, From: "node0", Wants: []Want{{Owner: "node1"}}}); err != nil {
		t.Errorf("sealed pull from a member failed after the attacks: %v", err)
	}
}
