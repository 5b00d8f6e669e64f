package node

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The types in this file mirror Consul's JSON, field for field, so that
// Consul's clients decode Shoal's answers unchanged.

// duration decodes Consul's durations: a Go duration string ("10s") or a
// number of nanoseconds.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		if x == "" {
			*d = 0
			return nil
		}
		p, err := time.ParseDuration(x)
		if err != nil {
			return fmt.Errorf("invalid duration %q", x)
		}
		*d = duration(p)
	case float64:
		*d = duration(int64(x))
	case nil:
		*d = 0
	default:
		return fmt.Errorf("invalid duration %s", b)
	}
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}

// CheckDefinition is a health check as registered: Consul's
// AgentServiceCheck (inside a service) and AgentCheckRegistration (alone).
type CheckDefinition struct {
	ID        string `json:"ID,omitempty"`
	CheckID   string `json:"CheckID,omitempty"`
	Name      string `json:"Name,omitempty"`
	Notes     string `json:"Notes,omitempty"`
	Status    string `json:"Status,omitempty"`
	ServiceID string `json:"ServiceID,omitempty"`

	Interval                       duration `json:"Interval,omitempty"`
	Timeout                        duration `json:"Timeout,omitempty"`
	TTL                            duration `json:"TTL,omitempty"`
	DeregisterCriticalServiceAfter duration `json:"DeregisterCriticalServiceAfter,omitempty"`

	HTTP          string              `json:"HTTP,omitempty"`
	Method        string              `json:"Method,omitempty"`
	Header        map[string][]string `json:"Header,omitempty"`
	Body          string              `json:"Body,omitempty"`
	TLSSkipVerify bool                `json:"TLSSkipVerify,omitempty"`
	TCP           string              `json:"TCP,omitempty"`
	GRPC          string              `json:"GRPC,omitempty"`
	GRPCUseTLS    bool                `json:"GRPCUseTLS,omitempty"`

	Args       []string `json:"Args,omitempty"`
	ScriptArgs []string `json:"ScriptArgs,omitempty"`

	SuccessBeforePassing   int `json:"SuccessBeforePassing,omitempty"`
	FailuresBeforeWarning  int `json:"FailuresBeforeWarning,omitempty"`
	FailuresBeforeCritical int `json:"FailuresBeforeCritical,omitempty"`
}

// Type names the kind of check, as Consul reports it.
func (c *CheckDefinition) Type() string {
	switch {
	case c.CheckID == nodeMaintID || strings.HasPrefix(c.CheckID, "_service_maintenance:"):
		return "maintenance"
	case c.HTTP != "":
		return "http"
	case c.TCP != "":
		return "tcp"
	case c.GRPC != "":
		return "grpc"
	case c.TTL > 0:
		return "ttl"
	default:
		return ""
	}
}

// ServiceDefinition is a registration as accepted by
// PUT /v1/agent/service/register (Consul's AgentServiceRegistration).
type ServiceDefinition struct {
	ID                string             `json:"ID"`
	Name              string             `json:"Name"`
	Tags              []string           `json:"Tags,omitempty"`
	Port              *int               `json:"Port,omitempty"`
	Address           string             `json:"Address,omitempty"`
	Meta              map[string]string  `json:"Meta,omitempty"`
	Weights           *Weights           `json:"Weights,omitempty"`
	EnableTagOverride bool               `json:"EnableTagOverride,omitempty"`
	Kind              string             `json:"Kind,omitempty"`
	Check             *CheckDefinition   `json:"Check,omitempty"`
	Checks            []*CheckDefinition `json:"Checks,omitempty"`
	// Connect asks for sidecar upstreams (see sidecar.go).
	Connect *ServiceConnect `json:"Connect,omitempty"`
}

// Weights are Consul's service weights.
type Weights struct {
	Passing int
	Warning int
}

// AgentService is a service as /v1/agent/services reports it.
type AgentService struct {
	Kind              string `json:",omitempty"`
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	TaggedAddresses   map[string]any `json:",omitempty"`
	Weights           Weights
	EnableTagOverride bool
	CreateIndex       uint64 `json:",omitempty"`
	ModifyIndex       uint64 `json:",omitempty"`
	ContentHash       string `json:",omitempty"`
	Datacenter        string `json:",omitempty"`
}

// AgentMember is a member as /v1/agent/members reports it.
type AgentMember struct {
	Name        string
	Addr        string
	Port        uint16
	Tags        map[string]string
	Status      int
	ProtocolMin uint8
	ProtocolMax uint8
	ProtocolCur uint8
	DelegateMin uint8
	DelegateMax uint8
	DelegateCur uint8
}

// CatalogNode is a node as /v1/catalog/nodes reports it.
type CatalogNode struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     uint64
	ModifyIndex     uint64
}

// CatalogService is an instance as /v1/catalog/service/:name reports it.
type CatalogService struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceID                string
	ServiceName              string
	ServiceAddress           string
	ServiceTags              []string
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceWeights           Weights
	ServiceEnableTagOverride bool
	CreateIndex              uint64
	ModifyIndex              uint64
}

// HealthCheck is a check's state as /v1/health/... reports it.
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	CreateIndex uint64
	ModifyIndex uint64
}

// ServiceEntry is one element of /v1/health/service/:name.
type ServiceEntry struct {
	Node    CatalogNode
	Service AgentService
	Checks  []HealthCheck
}
