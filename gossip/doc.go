// Package gossip is everything Shoal knows about the cluster: membership and
// failure detection (serf over memberlist), the replicated service catalog and
// the node-to-node path that moves catalog deltas between agents.
//
// Every agent owns the services registered with it and is the only writer of
// them. The layer above keeps this node's own catalog and the Cluster reads
// it through LocalCatalog, keeping no copy; it holds replicas of everyone
// else's. Each owner's catalog carries a version that only grows; every change
// becomes a Record stamped with the new version, and a deregistration becomes
// a tombstone. Other agents hold read-only replicas and accept a record only
// when it is newer than what they hold, so duplicates, reordering and stale
// peers cannot resurrect anything.
//
// Changes travel two ways. The fast path pushes each delta over TCP to a few
// random peers at once, and every agent that learns something new forwards it
// to a few of its own (epidemic eager push). The backstop is the owner's
// catalog version in its serf tags: tags ride memberlist's gossip and its
// push/pull anti-entropy, so every agent eventually sees every owner's latest
// version and pulls what it misses, also after partitions and restarts.
//
// Each peer has a sender of its own (sender.go), so a peer that is slow or
// black-holes packets delays only what is queued for it.
//
// No serf or memberlist type crosses this package's API, except memberlist's
// Transport in the Network hook, its own plug-in point. FaultNetwork, a
// Network that partitions, drops, delays and black-holes traffic, is a
// helper for in-process tests.
package gossip
