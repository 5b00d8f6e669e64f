// Package node is the composition root of a Shoal agent: its configuration,
// the local registry of the services it owns (persisted in the data dir),
// and the Consul-compatible HTTP API. It wires the gossip cluster to the
// registry: every committed change is published to gossip as a new version of
// this node's catalog.
package node
