package node

import (
	"errors"
	"net/http"

	"github.com/shoal-mesh/shoal/gossip"
)

// KeyringResponse is one element of /v1/operator/keyring, as Consul's.
type KeyringResponse struct {
	WAN         bool
	Datacenter  string
	Segment     string
	Messages    map[string]string
	Keys        map[string]int
	PrimaryKeys map[string]int
	NumNodes    int
}

// keyring serves /v1/operator/keyring: GET lists the keys installed across
// the cluster, POST installs {"Key"}, PUT makes it primary, DELETE removes
// it. Rotation is POST, PUT, DELETE, each applied on every member.
func (s *api) keyring(w http.ResponseWriter, r *http.Request) {
	op := map[string]gossip.KeyringOp{
		http.MethodGet: gossip.KeyList, http.MethodPost: gossip.KeyInstall,
		http.MethodPut: gossip.KeyUse, http.MethodDelete: gossip.KeyRemove,
	}[r.Method]
	key := ""
	if op != gossip.KeyList {
		var body struct{ Key string }
		if !decodeBody(w, r, &body) {
			return
		}
		if _, err := gossip.ParseKey(body.Key); err != nil {
			writeError(w, http.StatusBadRequest, "invalid key: %v", err)
			return
		}
		key = body.Key
	}
	resp, err := s.a.cluster.Keyring(op, key)
	if resp == nil {
		status := http.StatusInternalServerError
		if errors.Is(err, gossip.ErrNoEncryption) {
			status = http.StatusBadRequest
		}
		writeError(w, status, "%v", err)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v (%d of %d members failed: %v)", err, resp.NumErr, resp.NumNodes, resp.Messages)
		return
	}
	if op != gossip.KeyList {
		return
	}
	messages := resp.Messages
	if messages == nil {
		messages = map[string]string{}
	}
	writeJSON(w, r, []KeyringResponse{{
		Datacenter: s.a.cfg.Datacenter, Messages: messages,
		Keys: resp.Keys, PrimaryKeys: resp.PrimaryKeys, NumNodes: resp.NumNodes,
	}})
}
