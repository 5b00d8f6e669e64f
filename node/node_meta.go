package node

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/shoal-mesh/shoal/gossip"
)

// Limits on node meta, Consul's where it has them. The meta travels in the
// serf tags, which serf caps at 512 encoded bytes in all; Shoal's own tags
// take up to about 320 of them (IPv6 addresses, 20-digit versions), which
// leaves maxNodeMetaBytes.
const (
	maxNodeMetaPairs  = 64
	maxNodeMetaKeyLen = 128
	maxNodeMetaValLen = 512
	maxNodeMetaBytes  = 190
)

// validateNodeMeta returns every problem with a node's meta.
func validateNodeMeta(meta map[string]string) []error {
	var errs []error
	if len(meta) > maxNodeMetaPairs {
		errs = append(errs, fmt.Errorf("node meta: %d pairs, over the limit of %d", len(meta), maxNodeMetaPairs))
	}
	size := 0
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		v := meta[k]
		switch {
		case len(k) > maxNodeMetaKeyLen || !metaKeyRe.MatchString(k):
			errs = append(errs, fmt.Errorf("node meta key %q must be 1-%d letters, digits, '-' or '_'", truncate(k, 64), maxNodeMetaKeyLen))
		case strings.HasPrefix(k, "consul-"):
			errs = append(errs, fmt.Errorf("node meta key %q: the consul- prefix is reserved", k))
		}
		if err := validateText(fmt.Sprintf("node meta value of %q", truncate(k, 64)), v, maxNodeMetaValLen); err != nil {
			errs = append(errs, err)
		}
		size += tagSize(gossip.TagMetaPrefix+k) + tagSize(v)
	}
	if size > maxNodeMetaBytes {
		errs = append(errs, fmt.Errorf("node meta takes %d bytes of gossip tags, over the %d left by serf's 512-byte limit: use fewer or shorter pairs", size, maxNodeMetaBytes))
	}
	return errs
}

// tagSize is the encoded size of a tag string as serf sends it (msgpack).
func tagSize(s string) int {
	switch n := len(s); {
	case n < 32:
		return 1 + n
	case n < 256:
		return 2 + n
	default:
		return 3 + n
	}
}

// ParseNodeMeta reads --node-meta KEY=VALUE values into a map; a key given
// twice is an error.
func ParseNodeMeta(list []string) (map[string]string, error) {
	out := make(map[string]string, len(list))
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("node meta %q: want KEY=VALUE", kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("node meta key %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}
