package gossip

import (
	"time"
)

// Health statuses, with Consul's spelling.
const (
	StatusPassing  = "passing"
	StatusWarning  = "warning"
	StatusCritical = "critical"
)

// Weights are the relative weights a load balancer gives an instance while
// it is passing or warning, as in Consul.
type Weights struct {
	Passing int `json:"passing"`
	Warning int `json:"warning"`
}

// Check is the replicated state of one health check of a service instance.
type Check struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	Output string `json:"output,omitempty"`
	Notes  string `json:"notes,omitempty"`
	// Type is the kind of check ("http", "tcp", "ttl", "maintenance", ...).
	Type string `json:"type,omitempty"`
}

// Service is one service instance as its owner published it.
type Service struct {
	ID                string            `json:"id"`
	Name              string            `json:"name"`
	Tags              []string          `json:"tags,omitempty"`
	Address           string            `json:"address,omitempty"`
	Port              int               `json:"port,omitempty"`
	Meta              map[string]string `json:"meta,omitempty"`
	Weights           Weights           `json:"weights"`
	EnableTagOverride bool              `json:"eto,omitempty"`
	Checks            []Check           `json:"checks,omitempty"`
}

// Status aggregates the instance's checks the way Consul does: the worst
// status wins, and an instance without checks is passing.
func (s *Service) Status() string {
	status := StatusPassing
	for _, c := range s.Checks {
		switch c.Status {
		case StatusPassing:
		case StatusWarning:
			if status == StatusPassing {
				status = StatusWarning
			}
		default:
			return StatusCritical
		}
	}
	return status
}

// Record is one versioned entry of an owner's catalog: a live service, or a
// tombstone when Deleted is set.
type Record struct {
	// ID is the service ID, unique within its owner.
	ID string `json:"id"`
	// Version is the owner's catalog version at which this record last changed.
	Version uint64 `json:"v"`
	// Deleted marks a tombstone: the service was deregistered at Version.
	Deleted bool `json:"del,omitempty"`
	// Service is the instance; nil for tombstones.
	Service *Service `json:"svc,omitempty"`
}

// Delta carries an owner's records that changed after Since, up to Version.
//
// A full delta replaces everything known about the owner: services missing
// from it are gone. Its Since is the sender's floor, the oldest version from
// which the sender still holds every tombstone.
type Delta struct {
	Owner   string   `json:"owner"`
	Since   uint64   `json:"since"`
	Version uint64   `json:"version"`
	Full    bool     `json:"full,omitempty"`
	Records []Record `json:"records,omitempty"`
	// Att is the owner's signature of its catalog at Version, relayed
	// unchanged; set when the cluster runs with an Attestor.
	Att *Attestation `json:"att,omitempty"`
}

// NextVersion returns the version that follows prev. Versions are hybrid
// logical clocks: microseconds since the Unix epoch, bumped by one when the
// clock has not moved past prev. They never go backwards while an owner keeps
// its data dir, and an owner restarted with an empty data dir still outranks
// what it published before, as long as its clock is not set back by more than
// the time it was down.
func NextVersion(prev uint64, now time.Time) uint64 {
	v := uint64(max(now.UnixMicro(), 0)) // a clock before 1970 must not wrap to 2^64
	if v <= prev {
		return prev + 1
	}
	return v
}

// versionTime is the wall-clock time a version was minted at.
func versionTime(v uint64) time.Time {
	return time.UnixMicro(int64(v))
}
