package gossip

import "strconv"

// Queues is a snapshot of the gossip layer's backlog: messages waiting
// for a gossip round, and memberlist's own view of its health.
type Queues struct {
	// Intents are membership updates (joins, leaves, tag changes) waiting
	// to be gossiped.
	Intents int
	// Events and Queries are serf user events and queries waiting.
	Events, Queries int
	// HealthScore is memberlist's awareness score: 0 is healthy, higher
	// means this node is slow to answer probes (overloaded or losing
	// packets) and stretches its timeouts.
	HealthScore int
}

// Queues returns the depth of the gossip broadcast queues; zero before
// Start. Cheap enough to call on every metrics scrape.
func (c *Cluster) Queues() Queues {
	if c.serf == nil {
		return Queues{}
	}
	st := c.serf.Stats()
	n := func(key string) int {
		v, _ := strconv.Atoi(st[key])
		return v
	}
	return Queues{
		Intents:     n("intent_queue"),
		Events:      n("event_queue"),
		Queries:     n("query_queue"),
		HealthScore: n("health_score"),
	}
}
