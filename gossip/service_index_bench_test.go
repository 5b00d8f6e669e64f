package gossip

import (
	"fmt"
	"testing"
	"time"
)

// indexBenchCatalog builds a replica of 10,000 services with 10 instances
// each, spread over 100 owners (1,000 instances per owner).
func indexBenchCatalog(b *testing.B) *Catalog {
	b.Helper()
	const services, perService, owners = 10_000, 10, 100
	c := newCatalog("me", time.Now)
	base := NextVersion(0, time.Now())
	deltas := make([]Delta, owners)
	for o := range owners {
		name := fmt.Sprintf("node-%03d", o)
		c.setMember(member(name, StatusAlive))
		deltas[o] = Delta{Owner: name, Since: base, Version: base + 1, Full: true}
	}
	for s := range services {
		for j := range perService {
			o := (s*perService + j) % owners
			id := fmt.Sprintf("svc-%05d-%d", s, j)
			deltas[o].Records = append(deltas[o].Records, Record{ID: id, Version: base + 1, Service: &Service{
				ID: id, Name: fmt.Sprintf("svc-%05d", s), Port: 8000 + j, Weights: Weights{Passing: 1, Warning: 1},
			}})
		}
	}
	for i := range deltas {
		if c.apply(&deltas[i]) != applyApplied {
			b.Fatal("setup delta not applied")
		}
	}
	if n := len(c.Instances("svc-04242")); n != perService {
		b.Fatalf("svc-04242 has %d instances, want %d", n, perService)
	}
	return c
}

// BenchmarkServiceLookup measures, at 10,000 services × 10 instances, what
// the proxy pays per request (generation), per pool refresh (instances,
// from the index and, for comparison, by the scan the catalog used before),
// and what one changed instance costs the catalog (apply).
func BenchmarkServiceLookup(b *testing.B) {
	c := indexBenchCatalog(b)
	b.Run("generation", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c.ServiceGeneration("svc-04242") == 0 {
				b.Fatal("no generation")
			}
		}
	})
	b.Run("instances/indexed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Instances("svc-04242")
		}
	})
	b.Run("instances/scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.instances(func(_ string, s *Service) bool { return s.Name == "svc-04242" })
		}
	})
	b.Run("apply-one-change", func(b *testing.B) {
		b.ReportAllocs()
		v := c.Version("node-042")
		for b.Loop() {
			v++
			d := Delta{Owner: "node-042", Since: v - 1, Version: v, Records: []Record{{ID: "svc-00004-2", Version: v,
				Service: &Service{ID: "svc-00004-2", Name: "svc-00004", Port: 8002, Weights: Weights{Passing: 1, Warning: 1}}}}}
			if c.apply(&d) != applyApplied {
				b.Fatal("not applied")
			}
		}
	})
}
