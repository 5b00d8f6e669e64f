package gossip

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkCatalogMemory measures what a replica of 100,000 instances
// costs an agent: 10,000 owners (members with Shoal's tags) of 10
// instances each, every instance with two tags, two meta pairs and two
// checks, decoded from the wire as a peer's deltas arrive. It reports the
// live heap per instance and in all.
func BenchmarkCatalogMemory(b *testing.B) {
	const owners, perOwner = 10_000, 10
	base := NextVersion(0, time.Now())
	var msgs [][]byte
	for o := range owners {
		d := Delta{Owner: fmt.Sprintf("node-%05d", o), Since: base, Version: base + 1, Full: true}
		for j := range perOwner {
			id := fmt.Sprintf("svc-%02d-%05d", j, o)
			d.Records = append(d.Records, Record{ID: id, Version: base + 1, Service: &Service{
				ID: id, Name: fmt.Sprintf("svc-%02d", j), Address: fmt.Sprintf("10.%d.%d.%d", o>>16, (o>>8)&255, o&255),
				Port: 8000 + j, Tags: []string{"v1", "primary"}, Meta: map[string]string{"version": "1.4.2", "team": "payments"},
				Weights: Weights{Passing: 1, Warning: 1},
				Checks: []Check{
					{ID: "service:" + id, Name: "HTTP check", Status: StatusPassing, Output: "HTTP GET http://127.0.0.1/health: 200 OK", Type: "http"},
					{ID: "serfHealth", Name: "Serf Health Status", Status: StatusPassing, Type: "serf"},
				},
			}})
		}
		m, err := json.Marshal(&message{Type: msgPush, From: d.Owner, Deltas: []Delta{d}})
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := newCatalog("me", time.Now)
		for o, raw := range msgs {
			m, err := decodeMessage(raw)
			if err != nil {
				b.Fatal(err)
			}
			c.setMember(Member{Name: m.From, Status: StatusAlive, Tags: map[string]string{
				TagRole: "node", TagDatacenter: "dc1", TagNodeID: fmt.Sprintf("0d5e8a41-5f0e-4a4c-8d3a-%012d", o),
				TagRPC: "10.0.0.1:7947", TagHTTP: "127.0.0.1:8500", TagVersion: fmt.Sprint(base + 1), TagFloor: fmt.Sprint(base),
				TagProtocol: "1", TagProtocolMin: "1", TagProtocolMax: "1", TagBuild: "0.14.0",
			}})
			if c.apply(&m.Deltas[0]) != applyApplied {
				b.Fatal("not applied")
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := len(c.AllInstances()); n != owners*perOwner {
			b.Fatalf("%d instances", n)
		}
		heap := float64(after.HeapInuse) - float64(before.HeapInuse)
		b.ReportMetric(heap/(owners*perOwner), "B/instance")
		b.ReportMetric(heap/(1<<20), "MiB")
		runtime.KeepAlive(c)
	}
}
