package gossip

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// gcmSealer is a Sealer for tests: AES-256-GCM with a fixed key, the nonce
// prepended to the ciphertext.
type gcmSealer struct{ aead cipher.AEAD }

var _ Sealer = (*gcmSealer)(nil)

func newTestSealer(t testing.TB, keyByte byte) *gcmSealer {
	t.Helper()
	block, err := aes.NewCipher(bytes.Repeat([]byte{keyByte}, 32))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return &gcmSealer{aead: aead}
}

func (s *gcmSealer) Seal(plain []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, nil), nil
}

func (s *gcmSealer) Open(sealed []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < ns {
		return nil, errors.New("sealed frame too short")
	}
	return s.aead.Open(nil, sealed[:ns], sealed[ns:], nil)
}

// fixedSealer returns a fixed payload from Seal, to test size limits.
type fixedSealer struct{ out []byte }

func (s fixedSealer) Seal([]byte) ([]byte, error)   { return s.out, nil }
func (s fixedSealer) Open(b []byte) ([]byte, error) { return b, nil }

func sampleMessages() map[string]*message {
	web := &Service{
		ID: "web-1", Name: "web", Tags: []string{"v1", "canary"}, Address: "10.0.0.1", Port: 8080,
		Meta:    map[string]string{"version": "1.2.3", "zone": "a"},
		Weights: Weights{Passing: 10, Warning: 1}, EnableTagOverride: true,
		Checks: []Check{
			{ID: "c1", Name: "http", Status: StatusPassing, Output: "200 OK", Notes: "n", Type: "http"},
			{ID: "c2", Name: "ttl", Status: StatusWarning, Type: "ttl"},
		},
	}
	return map[string]*message{
		"push": {Type: msgPush, From: "node1", Deltas: []Delta{
			{Owner: "node1", Since: 10, Version: 20, Records: []Record{
				{ID: "web-1", Version: 15, Service: web},
				{ID: "web-2", Version: 20, Deleted: true},
			}},
			{Owner: "node2", Since: 5, Version: 1<<63 + 7, Full: true, Records: []Record{
				{ID: "db-1", Version: 6, Service: &Service{ID: "db-1", Name: "db"}},
			}},
			{Owner: "node3", Since: 1, Version: 2},
		}},
		"pull":  {Type: msgPull, From: "node2", Wants: []Want{{Owner: "node1", Since: 0}, {Owner: "node3", Since: 1<<64 - 1}}},
		"reply": {Type: msgReply, From: "node3"},
		"reply with deltas": {Type: msgReply, From: "node3", Deltas: []Delta{
			{Owner: "node1", Version: 20, Full: true, Records: []Record{{ID: "web-1", Version: 15, Service: web}}},
		}},
		"unicode": {Type: msgPush, From: "nöde-🐟", Deltas: []Delta{
			{Owner: "nöde-🐟", Version: 1, Records: []Record{{ID: "ü", Version: 1, Service: &Service{ID: "ü", Name: "\u2028\"<>&", Meta: map[string]string{"k": "\x00\n"}}}}},
		}},
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, sealer := range []Sealer{nil, newTestSealer(t, 1)} {
		for name, m := range sampleMessages() {
			t.Run(name, func(t *testing.T) {
				var buf bytes.Buffer
				if err := writeMessage(&buf, m, sealer); err != nil {
					t.Fatal(err)
				}
				size := buf.Len()
				wantKind := framePlain
				if sealer != nil {
					wantKind = frameSealed
				}
				if buf.Bytes()[0] != wantKind {
					t.Errorf("frame kind %d, want %d", buf.Bytes()[0], wantKind)
				}
				if n := binary.BigEndian.Uint32(buf.Bytes()[1:5]); int(n) != size-5 {
					t.Errorf("header says %d payload bytes, frame has %d", n, size-5)
				}
				got, n, err := readMessage(&buf, sealer)
				if err != nil {
					t.Fatal(err)
				}
				if n != size {
					t.Errorf("readMessage counted %d bytes, frame is %d", n, size)
				}
				if !reflect.DeepEqual(got, m) {
					t.Errorf("round trip changed the message:\n got %+v\nwant %+v", got, m)
				}
				if buf.Len() != 0 {
					t.Errorf("%d bytes left unread", buf.Len())
				}
			})
		}
	}
}

func TestWireStreamOfFrames(t *testing.T) {
	sealer := newTestSealer(t, 2)
	msgs := sampleMessages()
	var buf bytes.Buffer
	var order []string
	for name, m := range msgs {
		if err := writeMessage(&buf, m, sealer); err != nil {
			t.Fatal(err)
		}
		order = append(order, name)
	}
	for _, name := range order {
		got, _, err := readMessage(&buf, sealer)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, msgs[name]) {
			t.Errorf("%s: got %+v", name, got)
		}
	}
	if _, _, err := readMessage(&buf, sealer); err != io.EOF {
		t.Errorf("reading past the last frame: %v, want io.EOF", err)
	}
}

func frame(kind byte, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func TestWireRejects(t *testing.T) {
	plain, err := json.Marshal(sampleMessages()["push"])
	if err != nil {
		t.Fatal(err)
	}
	sealer := newTestSealer(t, 3)
	sealed, _ := sealer.Seal(plain)
	otherKey, _ := newTestSealer(t, 4).Seal(plain)
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	oversize := make([]byte, 5)
	binary.BigEndian.PutUint32(oversize[1:], maxFrame+1)
	huge := make([]byte, 5)
	huge[0] = frameSealed
	binary.BigEndian.PutUint32(huge[1:], 1<<32-1)

	tests := []struct {
		name    string
		in      []byte
		sealer  Sealer
		wantErr string // substring; "" means a specific sentinel below
		is      error
	}{
		{"empty stream", nil, nil, "", io.EOF},
		{"short header", []byte{0, 0, 0}, nil, "", io.ErrUnexpectedEOF},
		{"truncated payload", frame(framePlain, plain)[:20], nil, "", io.ErrUnexpectedEOF},
		{"oversize frame", oversize, nil, "exceeds", nil},
		{"oversize sealed frame", huge, sealer, "exceeds", nil},
		{"unknown frame kind", frame(7, plain), nil, "unknown frame kind 7", nil},
		{"unknown frame kind with a sealer", frame(0xff, sealed), sealer, "unknown frame kind 255", nil},
		{"plain frame when sealing is required", frame(framePlain, plain), sealer, "", errPlainRefused},
		{"sealed frame without a key", frame(frameSealed, sealed), nil, "no key", nil},
		{"sealed with another key", frame(frameSealed, otherKey), sealer, "open sealed frame", nil},
		{"tampered sealed frame", frame(frameSealed, tampered), sealer, "open sealed frame", nil},
		{"sealed frame too short", frame(frameSealed, []byte{1, 2}), sealer, "open sealed frame", nil},
		{"empty payload", frame(framePlain, nil), nil, "decode message", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, err := readMessage(bytes.NewReader(tt.in), tt.sealer)
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			if m != nil {
				t.Errorf("returned a message with the error %v", err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v, want %v", err, tt.is)
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestWriteMessageRejectsOversizeFrames(t *testing.T) {
	var buf bytes.Buffer
	err := writeMessage(&buf, &message{Type: msgPush, From: "a"}, fixedSealer{out: make([]byte, maxFrame+1)})
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("writeMessage of an oversize frame: %v", err)
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %d bytes of a rejected frame", buf.Len())
	}
	// A header announcing exactly maxFrame passes the size check: what fails
	// here is the missing payload.
	hdr := make([]byte, 5)
	binary.BigEndian.PutUint32(hdr[1:], maxFrame)
	if _, _, err := readMessage(bytes.NewReader(append(hdr, '{')), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("frame announcing exactly maxFrame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestWriteMessageSealError(t *testing.T) {
	var buf bytes.Buffer
	err := writeMessage(&buf, &message{Type: msgPush}, errSealer{})
	if err == nil || !strings.Contains(err.Error(), "seal") {
		t.Fatalf("writeMessage with a failing sealer: %v", err)
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %d bytes after a seal error", buf.Len())
	}
}

type errSealer struct{}

func (errSealer) Seal([]byte) ([]byte, error) { return nil, errors.New("no entropy") }
func (errSealer) Open([]byte) ([]byte, error) { return nil, errors.New("no key") }

func TestDecodeMessageRejects(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"not JSON", `{`, "decode message"},
		{"empty", ``, "decode message"},
		{"array", `[]`, "decode message"},
		{"null", `null`, "unknown message type"},
		{"empty object", `{}`, "unknown message type"},
		{"unknown type", `{"type":"gossip","from":"a"}`, "unknown message type"},
		{"type of the wrong kind", `{"type":1}`, "decode message"},
		{"delta without owner", `{"type":"push","deltas":[{"version":3}]}`, "without owner"},
		{"record without ID", `{"type":"push","deltas":[{"owner":"a","version":3,"records":[{"v":3,"svc":{"id":"x","name":"x"}}]}]}`, "malformed record"},
		{"tombstone without ID", `{"type":"reply","deltas":[{"owner":"a","version":3,"records":[{"v":3,"del":true}]}]}`, "malformed record"},
		{"live record without service", `{"type":"push","deltas":[{"owner":"a","version":3,"records":[{"id":"x","v":3}]}]}`, "malformed record"},
		{"live record with null service", `{"type":"push","deltas":[{"owner":"a","version":3,"records":[{"id":"x","v":3,"svc":null}]}]}`, "malformed record"},
		{"negative version", `{"type":"push","deltas":[{"owner":"a","version":-1}]}`, "decode message"},
		{"version past uint64", `{"type":"push","deltas":[{"owner":"a","version":18446744073709551616}]}`, "decode message"},
		{"fractional version", `{"type":"push","deltas":[{"owner":"a","version":1.5}]}`, "decode message"},
		{"string version", `{"type":"push","deltas":[{"owner":"a","version":"1"}]}`, "decode message"},
		{"records not a list", `{"type":"push","deltas":[{"owner":"a","version":1,"records":{}}]}`, "decode message"},
		{"meta not strings", `{"type":"push","deltas":[{"owner":"a","version":1,"records":[{"id":"x","v":1,"svc":{"meta":{"a":1}}}]}]}`, "decode message"},
		{"wants not a list", `{"type":"pull","wants":"all"}`, "decode message"},
		{"trailing garbage", `{"type":"push"} x`, "decode message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeMessage([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted %s: %+v", tt.in, m)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to mention %q", err, tt.wantErr)
			}
			// The same bytes in a frame are rejected by readMessage too.
			if _, _, err := readMessage(bytes.NewReader(frame(framePlain, []byte(tt.in))), nil); err == nil {
				t.Errorf("readMessage accepted the framed payload")
			}
		})
	}
}

func TestDecodeMessageAccepts(t *testing.T) {
	for _, in := range []string{
		`{"type":"reply","from":""}`,
		`{"type":"push","from":"a","deltas":[]}`,
		`{"type":"push","from":"a","deltas":[{"owner":"a","version":1,"records":[{"id":"x","v":1,"del":true}]}]}`,
		// A tombstone that still carries its service is tolerated.
		`{"type":"push","from":"a","deltas":[{"owner":"a","version":1,"records":[{"id":"x","v":1,"del":true,"svc":{"id":"x"}}]}]}`,
		`{"type":"pull","from":"a","wants":[{"owner":"b","since":0}],"unknown-field":true}`,
	} {
		if _, err := decodeMessage([]byte(in)); err != nil {
			t.Errorf("rejected %s: %v", in, err)
		}
	}
}

// FuzzDecodeMessage feeds arbitrary payloads to the decoder a peer's bytes
// reach first. It must never panic; whatever it accepts must re-encode to a
// stable form and be safe to apply to a replica.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		``, `{`, `null`, `{}`, `[]`, `"push"`,
		`{"type":"push","deltas":[{"owner":"a","version":3,"records":[{"v":3}]}]}`,
		`{"type":"push","deltas":[{"owner":"a","since":9,"version":3,"full":true,"records":[{"id":"x","v":4,"svc":{}}]}]}`,
		`{"type":"pull","wants":[{"owner":"","since":18446744073709551615}]}`,
		`{"type":"reply","deltas":[{"owner":"a","version":1,"records":[{"id":"x","v":1,"del":true,"svc":{"checks":[{"status":"bogus"}]}}]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if m != nil {
				t.Fatalf("message returned with error %v", err)
			}
			return
		}
		// Canonical form: encode → decode → encode is a fixed point.
		var buf bytes.Buffer
		if err := writeMessage(&buf, m, nil); err != nil {
			t.Fatalf("re-encoding an accepted message: %v", err)
		}
		enc1 := bytes.Clone(buf.Bytes())
		m2, _, err := readMessage(&buf, nil)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", enc1, err)
		}
		buf.Reset()
		if err := writeMessage(&buf, m2, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc1, buf.Bytes()) {
			t.Fatalf("encoding not stable:\n%q\n%q", enc1, buf.Bytes())
		}
		// Applying whatever was accepted must not panic, and the replica
		// must stay consistent with what it reports.
		c := newCatalog("local", newFakeClock().Now)
		for i := range m.Deltas {
			c.setMember(member(m.Deltas[i].Owner, StatusAlive))
			c.apply(&m.Deltas[i])
		}
		for _, in := range c.AllInstances() {
			if in.Service == nil || in.Version > c.Version(in.Node.Name) {
				t.Fatalf("instance %+v inconsistent with replica version %d", in, c.Version(in.Node.Name))
			}
			_ = in.Status()
		}
		for _, w := range m.Wants {
			c.deltaSince(w.Owner, w.Since)
		}
		c.Services()
		c.reapTombstones(0)
	})
}
