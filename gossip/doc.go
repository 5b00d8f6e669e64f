// Package gossip is everything Shoal knows about the cluster: membership and
// failure detection (serf over memberlist), the replicated service catalog and
// the node-to-node path that moves catalog deltas between agents.
//
// Every agent owns the services registered with it and is the only writer of
// them. Each owner's catalog carries a version that only grows; every change
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
// No serf or memberlist type crosses this package's API.
package gossip
