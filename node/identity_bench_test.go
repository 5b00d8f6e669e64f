package node

import (
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/shoal-mesh/shoal/node/pki"
)

// BenchmarkLeaves1000 measures what 1,000 service identities cost an
// agent: the time to sign them and the heap they hold.
//
//	go test -run '^$' -bench Leaves1000 -benchtime 3x ./node/
func BenchmarkLeaves1000(b *testing.B) {
	p := newTestPKI(b, "bench.test")
	cert, key := p.node("n0")
	bundle, err := pki.LoadBundle(p.caFile, cert, key, "n0", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	names := make(map[string]bool, 1000)
	for i := range 1000 {
		names[fmt.Sprintf("service-%04d", i)] = true
	}
	var heap uint64
	b.ResetTimer()
	for range b.N {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ids, err := newIdentities(bundle, 24*time.Hour, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		ids.sync(names)
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := len(*ids.byName.Load()); n != 1001 {
			b.Fatalf("%d leaves, want 1001", n)
		}
		heap += after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(ids)
	}
	b.ReportMetric(float64(heap)/float64(b.N)/(1<<20), "heap-MiB/1000-leaves")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/leaf")
}
