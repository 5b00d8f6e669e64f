package main

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-metrics"
)

// memberlistBytes counts the bytes memberlist reports sending, over UDP
// and TCP, as metrics "memberlist.udp.sent" and "memberlist.tcp.sent": what
// failure detection and membership gossip cost. It is a go-metrics sink that
// ignores every other metric.
//
// Memberlist reports to go-metrics' process-wide sink, so every agent of
// the process adds to one count; agents run on memberlist's own transport,
// exactly as in production.
type memberlistBytes struct {
	udp, tcp atomic.Uint64 // gossip and probes; push/pull syncs
	// pushPulls counts the full-state syncs (memberlist.pushPullNode).
	pushPulls atomic.Uint64
}

func (s *memberlistBytes) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	if len(key) != 3 || key[0] != "memberlist" || key[2] != "sent" {
		return
	}
	switch key[1] {
	case "udp":
		s.udp.Add(uint64(val))
	case "tcp":
		s.tcp.Add(uint64(val))
	}
}

func (s *memberlistBytes) IncrCounter(key []string, val float32) {
	s.IncrCounterWithLabels(key, val, nil)
}
func (*memberlistBytes) SetGauge([]string, float32)                            {}
func (*memberlistBytes) SetGaugeWithLabels([]string, float32, []metrics.Label) {}
func (*memberlistBytes) EmitKey([]string, float32)                             {}
func (s *memberlistBytes) AddSample(key []string, val float32) {
	s.AddSampleWithLabels(key, val, nil)
}

func (s *memberlistBytes) AddSampleWithLabels(key []string, _ float32, _ []metrics.Label) {
	if len(key) == 2 && key[0] == "memberlist" && key[1] == "pushPullNode" {
		s.pushPulls.Add(1)
	}
}

var _ metrics.MetricSink = (*memberlistBytes)(nil)

// installMemberlistBytes makes a new counter the process-wide metrics sink;
// the returned function puts back a sink that drops everything, as
// go-metrics starts.
func installMemberlistBytes() (*memberlistBytes, func(), error) {
	s := &memberlistBytes{}
	// No service or host name: keys arrive as memberlist emits them.
	if _, err := metrics.NewGlobal(&metrics.Config{FilterDefault: true, TimerGranularity: time.Millisecond}, s); err != nil {
		return nil, nil, err
	}
	return s, func() { metrics.NewGlobal(&metrics.Config{}, &metrics.BlackholeSink{}) }, nil
}
