package gossip

import (
	"io"
	"sync/atomic"
)

// Stats counts the traffic of the node-to-node catalog path, and the member
// failures this agent has seen.
type Stats struct {
	BytesOut  uint64 // bytes written to peers
	BytesIn   uint64 // bytes read from peers
	PushesOut uint64 // push messages sent
	PushesIn  uint64 // push messages received
	Pulls     uint64 // pull requests sent
	// TagUpdates counts the updates of this member's serf tags (each a
	// broadcast to the cluster) that advertised a new catalog version.
	TagUpdates uint64
	// MemberFailures counts the times failure detection declared a member
	// failed here; one that flaps counts once per failure.
	MemberFailures uint64
	// Refused counts peers' deltas refused on their owner's signature, by
	// reason (RefusedUnsigned, RefusedSignature, RefusedDigest).
	Refused map[string]uint64
	// EntrySyncs counts the config entry exchanges that found a
	// difference with a peer; EntriesRefused counts peers' config entries
	// refused, by reason (RefusedUnsigned, RefusedSignature, RefusedLimit).
	EntrySyncs     uint64
	EntriesRefused map[string]uint64
}

type stats struct {
	bytesOut, bytesIn, pushesOut, pushesIn, pulls, memberFailures, entrySyncs, tagUpdates atomic.Uint64
}

func (s *stats) snapshot() Stats {
	return Stats{
		BytesOut:  s.bytesOut.Load(),
		BytesIn:   s.bytesIn.Load(),
		PushesOut: s.pushesOut.Load(),
		PushesIn:  s.pushesIn.Load(),
		Pulls:     s.pulls.Load(),

		TagUpdates:     s.tagUpdates.Load(),
		MemberFailures: s.memberFailures.Load(),
		EntrySyncs:     s.entrySyncs.Load(),
	}
}

// countingWriter adds the bytes written through it to a counter.
type countingWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n.Add(uint64(n))
	return n, err
}
