package node

import "github.com/shoal-mesh/shoal/gossip"

// ClusterView is a read-only view of an agent's gossip cluster: its
// membership, its replica of the catalog and its counters. The agent is
// the cluster's only writer (its catalog, joins, leaves, config entries);
// what a caller may change goes through the agent (Join, Leave) or its API.
type ClusterView struct{ c *gossip.Cluster }

// Catalog is the replicated catalog; its exported methods only read.
func (v ClusterView) Catalog() *gossip.Catalog { return v.c.Catalog() }

// Members returns every member serf knows, left and failed ones included.
func (v ClusterView) Members() []gossip.Member { return v.c.Members() }

// LocalMember returns the agent as a member.
func (v ClusterView) LocalMember() gossip.Member { return v.c.LocalMember() }

// RPCAddr is the advertised address of the node-to-node catalog path.
func (v ClusterView) RPCAddr() string { return v.c.RPCAddr() }

// Stats returns the traffic counters of the catalog path.
func (v ClusterView) Stats() gossip.Stats { return v.c.Stats() }

// Coordinates returns the network coordinates of every member known.
func (v ClusterView) Coordinates() map[string]gossip.Coordinate { return v.c.Coordinates() }

// EntriesSnapshot returns every config entry held, tombstones included.
func (v ClusterView) EntriesSnapshot() []gossip.Entry { return v.c.EntriesSnapshot() }

// Entry returns the live config entry kind/name.
func (v ClusterView) Entry(kind, name string) (gossip.Entry, bool) { return v.c.Entry(kind, name) }

// Entries returns the live config entries of kind ("" for every kind).
func (v ClusterView) Entries(kind string) []gossip.Entry { return v.c.Entries(kind) }
