package node

import (
	"cmp"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/shoal-mesh/shoal/gossip"
)

// nodeMetaParam reads Consul's ?node-meta=KEY:VALUE, repeatable: a node
// must carry every pair. A parameter without ':' asks for an empty value,
// as Consul reads it.
func nodeMetaParam(r *http.Request) map[string]string {
	vs := r.URL.Query()["node-meta"]
	if len(vs) == 0 {
		return nil
	}
	want := make(map[string]string, len(vs))
	for _, v := range vs {
		k, val, _ := strings.Cut(v, ":")
		want[k] = val
	}
	return want
}

// metaMatches reports whether meta carries every pair of want.
func metaMatches(meta, want map[string]string) bool {
	for k, v := range want {
		if got, ok := meta[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// nearParam reads ?near=NODE; "_agent" names this agent, as in Consul.
func (s *api) nearParam(r *http.Request) string {
	near := r.URL.Query().Get("near")
	if near == "_agent" {
		return s.a.cfg.NodeName
	}
	return near
}

// sortNear orders items by the estimated round-trip time from node near to
// the node each one lives on (nodeOf), nearest first; items whose node has
// no coordinate go last, in their order. When near is empty or has no
// coordinate itself, items stay as they are, as in Consul.
func sortNear[T any](coords map[string]gossip.Coordinate, near string, items []T, nodeOf func(T) string) {
	from, ok := coords[near]
	if near == "" || !ok {
		return
	}
	const unknown = time.Duration(math.MaxInt64)
	dist := func(v T) time.Duration {
		c, ok := coords[nodeOf(v)]
		if !ok {
			return unknown
		}
		d, err := from.DistanceTo(c)
		if err != nil {
			return unknown
		}
		return d
	}
	slices.SortStableFunc(items, func(a, b T) int { return cmp.Compare(dist(a), dist(b)) })
}
