package node

import (
	"net/http"
	"sort"

	"github.com/shoal-mesh/shoal/gossip"
)

// CoordinateEntry is a node's network coordinate as /v1/coordinate/nodes
// reports it, Consul's shape. Shoal has no network segments: Segment is
// always empty.
type CoordinateEntry struct {
	Node    string
	Segment string
	Coord   gossip.Coordinate
}

// coordinateNodes answers the coordinates of every node in the catalog that
// this agent has one for: its own and those of the peers it has probed.
// Consul's servers collect coordinates from every agent; here each agent
// answers from what its own probes learned, which converges to the same
// set within a few probe rounds.
func (s *api) coordinateNodes(w http.ResponseWriter, r *http.Request) {
	coords := s.a.cluster.Coordinates()
	out := []CoordinateEntry{}
	for _, m := range s.a.cluster.Catalog().Members() {
		if c, ok := coords[m.Name]; ok && registered(m) {
			out = append(out, CoordinateEntry{Node: m.Name, Coord: c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	setMeta(w, s.a.cluster.Catalog().Index())
	writeJSON(w, r, out)
}

// coordinateNode answers one node's coordinate, as a one-element list like
// Consul's (one entry per segment); 404 when there is none yet.
func (s *api) coordinateNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("node")
	m, ok := s.a.cluster.Catalog().Member(name)
	c, has := s.a.cluster.Coordinates()[name]
	if !ok || !registered(m) || !has {
		writeError(w, http.StatusNotFound, "no coordinate for node %q (unknown, or not probed yet)", name)
		return
	}
	setMeta(w, s.a.cluster.Catalog().Index())
	writeJSON(w, r, []CoordinateEntry{{Node: name, Coord: c}})
}
