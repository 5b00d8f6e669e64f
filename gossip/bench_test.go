package gossip

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// benchServices is the size of the catalog the benchmarks move around: an
// agent with many services registered.
const benchServices = 200

// benchDelta returns the full delta of an owner with n services, each with
// tags, meta and two checks, as node publishes them.
func benchDelta(n int) Delta {
	base := NextVersion(0, time.Now())
	d := Delta{Owner: "bench-0001", Since: base, Version: base + uint64(n), Full: true}
	for i := range n {
		id := fmt.Sprintf("web-%03d", i)
		d.Records = append(d.Records, Record{ID: id, Version: base + uint64(i) + 1, Service: &Service{
			ID: id, Name: fmt.Sprintf("svc-%d", i%20), Tags: []string{"v1", "primary"},
			Address: "10.0.3.17", Port: 8000 + i, Meta: map[string]string{"version": "1.4.2", "zone": "eu-west-1a"},
			Weights: Weights{Passing: 1, Warning: 1},
			Checks: []Check{
				{ID: "service:" + id, Name: "HTTP on /health", Status: StatusPassing, Output: "HTTP GET /health: 200 OK", Type: "http"},
				{ID: "service:" + id + ":ttl", Name: "heartbeat", Status: StatusPassing, Type: "ttl"},
			},
		}})
	}
	return d
}

func benchFrame(b *testing.B, m *message) []byte {
	b.Helper()
	var buf bytes.Buffer
	if err := writeMessage(&buf, m, nil); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDeltaEncode frames a push of a 200-service catalog, what an
// agent sends a peer that holds none of it.
func BenchmarkDeltaEncode(b *testing.B) {
	m := &message{Type: msgPush, From: "bench-0001", Deltas: []Delta{benchDelta(benchServices)}}
	b.SetBytes(int64(len(benchFrame(b, m))))
	b.ReportAllocs()
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := writeMessage(&buf, m, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeltaDecode reads, decodes and validates the same push, as a
// receiving agent does before applying it.
func BenchmarkDeltaDecode(b *testing.B) {
	frame := benchFrame(b, &message{Type: msgPush, From: "bench-0001", Deltas: []Delta{benchDelta(benchServices)}})
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := readMessage(bytes.NewReader(frame), nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply merges deltas into a replica: a whole 200-service catalog
// (a newcomer's first sync), and one changed service of it (the common
// case: a registration or a check flip).
func BenchmarkApply(b *testing.B) {
	b.Run("full", func(b *testing.B) {
		c := newCatalog("local", time.Now)
		d := benchDelta(benchServices)
		b.ReportAllocs()
		for b.Loop() {
			d.Version++ // each one newer than the last, so that it applies
			if c.apply(&d) != applyApplied {
				b.Fatal("full delta not applied")
			}
		}
	})
	b.Run("one-change", func(b *testing.B) {
		c := newCatalog("local", time.Now)
		full := benchDelta(benchServices)
		if c.apply(&full) != applyApplied {
			b.Fatal("full delta not applied")
		}
		r := full.Records[0]
		v := full.Version
		b.ReportAllocs()
		for b.Loop() {
			r.Version = v + 1
			d := Delta{Owner: full.Owner, Since: v, Version: v + 1, Records: []Record{r}}
			if c.apply(&d) != applyApplied {
				b.Fatal("delta not applied")
			}
			v++
		}
	})
}
