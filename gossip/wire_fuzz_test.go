package gossip

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fuzzSealer is a keyringSealer with a fixed key, for FuzzReadMessage.
func fuzzSealer(t testing.TB) *keyringSealer {
	t.Helper()
	kr, err := newKeyring([]string{base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))})
	if err != nil {
		t.Fatal(err)
	}
	return newKeyringSealer(kr)
}

// FuzzReadMessage feeds arbitrary byte streams to readMessage, the first
// code a peer's catalog connection reaches: frame header, optional sealing,
// then the decoder. It must never panic nor allocate for bytes that were
// not sent; whatever it accepts must survive encode/decode unchanged once
// in canonical form (decode(encode(x)) == x).
func FuzzReadMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		var buf bytes.Buffer
		if err := writeMessage(&buf, m, nil); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes(), false)
	}
	hdr := func(kind byte, n uint32) []byte {
		b := []byte{kind, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	f.Add(hdr(framePlain, 1<<32-1), false)
	f.Add(hdr(frameSealed, maxFrame), true)
	f.Add(append(hdr(framePlain, maxFrame), '{'), false)
	f.Add(frame(framePlain, []byte(`{"type":"push","from":"a","deltas":[{"owner":"b","version":1,"records":[{"id":"x","v":1,"svc":{"id":"x","name":"web"}}]}]}`)), false)
	f.Add(frame(framePlain, []byte(`{"type":"pull","from":"a","wants":[{"owner":"b"}]}`+strings.Repeat(" ", 10))), false)
	f.Add(frame(frameSealed, append([]byte{sealVersion}, make([]byte, sealOverhead)...)), true)
	f.Add(frame(framePlain, []byte(`{"type":"push","deltas":[`+strings.Repeat(`{},`, 100)+`{}]}`)), false)

	f.Fuzz(func(t *testing.T, in []byte, sealed bool) {
		var s Sealer
		if sealed {
			s = fuzzSealer(t)
		}
		m, n, err := readMessage(bytes.NewReader(in), s)
		if err != nil {
			if m != nil {
				t.Fatalf("message returned with error %v", err)
			}
			return
		}
		if n > len(in) {
			t.Fatalf("counted %d bytes of a %d-byte input", n, len(in))
		}
		// Canonical form: what a sender would produce from the message.
		x := roundTrip(t, m, s)
		if err := validateMessage(x); err != nil {
			t.Fatalf("canonical form of an accepted message is invalid: %v", err)
		}
		if y := roundTrip(t, x, s); !reflect.DeepEqual(x, y) {
			t.Fatalf("decode(encode(x)) != x:\n x %+v\n y %+v", x, y)
		}
	})
}

// roundTrip writes m as a frame and reads it back.
func roundTrip(t *testing.T, m *message, s Sealer) *message {
	t.Helper()
	var buf bytes.Buffer
	if err := writeMessage(&buf, m, s); err != nil {
		t.Fatalf("re-encoding an accepted message: %v", err)
	}
	enc := bytes.Clone(buf.Bytes())
	got, _, err := readMessage(&buf, s)
	if err != nil {
		t.Fatalf("re-decoding %q: %v", enc, err)
	}
	return got
}

// TestReadMessageAllocatesWhatArrives checks that a header announcing a
// large frame costs only the bytes that actually follow it.
func TestReadMessageAllocatesWhatArrives(t *testing.T) {
	for _, n := range []uint32{maxFrame, 1<<32 - 1} {
		in := make([]byte, 5, 5+10)
		binary.BigEndian.PutUint32(in[1:], n)
		in = append(in, `{"type":`...)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, err := readMessage(bytes.NewReader(in), nil)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("header of %d bytes with 8 bytes of payload accepted", n)
		}
		if n <= maxFrame && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("truncated frame: %v, want io.ErrUnexpectedEOF", err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Errorf("header announcing %d bytes: allocated %d bytes", n, got)
		}
	}
}

// TestDecodeMessageBounds checks the count and size bounds on peer input.
func TestDecodeMessageBounds(t *testing.T) {
	record := func(svc string) string {
		return `{"type":"push","from":"a","deltas":[{"owner":"b","version":1,"records":[{"id":"x","v":1,"svc":` + svc + `}]}]}`
	}
	many := func(item string, n int) string {
		return strings.TrimSuffix(strings.Repeat(item+",", n), ",")
	}
	long := strings.Repeat("a", maxPeerName+1)
	tests := []struct{ name, in, wantErr string }{
		{"too many items", `{"type":"push","deltas":[` + many(`{}`, maxItems) + `]}`, "items exceed"},
		{"too many deltas", `{"type":"push","deltas":[` + many(`{"owner":"a"}`, maxDeltas+1) + `]}`, "deltas exceed"},
		{"too many records", `{"type":"push","deltas":[{"owner":"a","records":[` + many(`{"id":"x","del":true}`, maxRecords+1) + `]}]}`, "records exceed"},
		{"too many wants", `{"type":"pull","wants":[` + many(`{}`, maxWants+1) + `]}`, "wants exceed"},
		{"long sender", `{"type":"push","from":"` + long + `"}`, "exceeds"},
		{"long owner", `{"type":"push","deltas":[{"owner":"` + long + `"}]}`, "exceeds"},
		{"control character in owner", `{"type":"push","deltas":[{"owner":"a\u0000b"}]}`, "control character"},
		{"long record ID", `{"type":"push","deltas":[{"owner":"a","records":[{"id":"` + long + `","del":true}]}]}`, "exceeds"},
		{"service without name", record(`{"id":"x"}`), "without name"},
		{"service ID differs", record(`{"id":"y","name":"web"}`), "carries service ID"},
		{"CRLF in name", record(`{"id":"x","name":"web\r\n"}`), "control character"},
		{"port out of range", record(`{"id":"x","name":"web","port":65536}`), "port"},
		{"negative port", record(`{"id":"x","name":"web","port":-1}`), "port"},
		{"negative weight", record(`{"id":"x","name":"web","weights":{"passing":-1}}`), "weights"},
		{"huge weight", record(`{"id":"x","name":"web","weights":{"passing":1000000}}`), "weights"},
		{"too many tags", record(`{"id":"x","name":"web","tags":[` + many(`"t"`, maxPeerListItems+1) + `]}`), "at most"},
		{"too many checks", record(`{"id":"x","name":"web","checks":[` + many(`{"id":"c"}`, maxPeerListItems+1) + `]}`), "at most"},
		{"huge tag", record(`{"id":"x","name":"web","tags":["` + strings.Repeat("t", maxPeerText+1) + `"]}`), "exceeds"},
		{"huge meta value", record(`{"id":"x","name":"web","meta":{"k":"` + strings.Repeat("v", maxPeerText+1) + `"}}`), "exceeds"},
		{"empty meta key", record(`{"id":"x","name":"web","meta":{"":"v"}}`), "empty meta key"},
		{"check without ID", record(`{"id":"x","name":"web","checks":[{"name":"c"}]}`), "empty check ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeMessage([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted: %d deltas", len(m.Deltas))
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
	// At the limits, messages pass.
	ok := []string{
		`{"type":"push","deltas":[` + many(`{"owner":"a"}`, 1000) + `]}`,
		record(`{"id":"x","name":"web","port":65535,"weights":{"passing":65536,"warning":0},"tags":[` + many(`"t"`, maxPeerListItems) + `]}`),
	}
	for _, in := range ok {
		if _, err := decodeMessage([]byte(in)); err != nil {
			t.Errorf("rejected a message within the bounds: %v", err)
		}
	}
}

// TestDecodeMessageDropsTombstoneService checks that a tombstone's service
// is not kept: it would never be read, only held.
func TestDecodeMessageDropsTombstoneService(t *testing.T) {
	m, err := decodeMessage([]byte(`{"type":"push","deltas":[{"owner":"a","version":1,"records":[{"id":"x","v":1,"del":true,"svc":{"id":"x","tags":["a"]}}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Deltas[0].Records[0]; r.Service != nil {
		t.Errorf("tombstone kept its service %+v", r.Service)
	}
}

// TestCountItems checks the pre-decoding item count, strings included.
func TestCountItems(t *testing.T) {
	for in, want := range map[string]int{
		``:                     0,
		`{}`:                   1,
		`[1,2,3]`:              3,
		`{"a":[{},{}],"b":1}`:  6,
		`"{,[,"`:               0,
		`["a\",[", "\\", {}]`:  4,
		`{"k":"\\\"{"}`:        1,
		`[[[[[[[[[[]]]]]]]]]]`: 10,
	} {
		if got := countItems([]byte(in)); got != want {
			t.Errorf("countItems(%s) = %d, want %d", in, got, want)
		}
	}
}

// TestSealedRoundTripKeepsMessage checks decode(encode(x)) == x through a
// real keyring sealer for every sample message.
func TestSealedRoundTripKeepsMessage(t *testing.T) {
	s := fuzzSealer(t)
	s.now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	for name, m := range sampleMessages() {
		b, _ := json.Marshal(m)
		x, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if y := roundTrip(t, x, s); !reflect.DeepEqual(x, y) {
			t.Errorf("%s: sealed round trip changed the message:\n x %+v\n y %+v", name, x, y)
		}
	}
}
