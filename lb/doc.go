// Package lb is Shoal's local forwarding proxy: an HTTP listener that routes
// by Host to a service, TCP listeners per upstream service, balancing
// policies, passive health (outlier ejection) and retries.
//
// It knows nothing about gossip. It reads the healthy instances of a service
// through the small View interface, which the agent satisfies from the
// replicated catalog. State that only the proxy knows (requests in flight,
// latency, ejections) lives on lb's own endpoint objects, keyed by instance
// identity, so it survives view refreshes.
package lb
