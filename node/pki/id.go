package pki

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// ID is a SPIFFE identity on the mesh: spiffe://NODE.TRUSTDOMAIN/node for a
// node itself, spiffe://NODE.TRUSTDOMAIN/svc/SERVICE for a service on it.
//
// The node is part of the URI's host, and hosts, like X.509 name
// constraints, ignore case: "Web-1" and "web-1" cannot be told apart in a
// certificate. So the node of every ID this package returns is lowercased,
// and a node name is compared with strings.EqualFold. Service names are in
// the path and keep their case.
type ID struct {
	TrustDomain string
	Node        string
	// Service is empty for the node's own identity.
	Service string
}

// URI returns the identity as the URI a certificate carries.
func (id ID) URI() *url.URL {
	u := &url.URL{Scheme: "spiffe", Host: nodeHost(id.Node, id.TrustDomain), Path: "/node"}
	if id.Service != "" {
		u.Path = "/svc/" + id.Service
	}
	return u
}

// String returns the URI as a string.
func (id ID) String() string { return id.URI().String() }

// ParseID reads an identity from u, which must be in trustDomain. It
// accepts only the canonical form: scheme spiffe, host NODE.trustDomain
// (in any case), path /node or /svc/SERVICE, and nothing else (no user,
// port, query, fragment or escapes).
func ParseID(u *url.URL, trustDomain string) (ID, error) {
	if u == nil {
		return ID{}, errors.New("no identity URI")
	}
	fail := func(format string, args ...any) (ID, error) {
		return ID{}, fmt.Errorf("identity %q: %s", u.String(), fmt.Sprintf(format, args...))
	}
	host, err := spiffeHost(u)
	if err != nil {
		return fail("%v", err)
	}
	td := strings.ToLower(trustDomain)
	node, ok := strings.CutSuffix(host, "."+td)
	if !ok || td == "" {
		return fail("host %q is not in trust domain %q", u.Host, trustDomain)
	}
	if err := validateNodeName(node); err != nil {
		return fail("%v", err)
	}
	id := ID{TrustDomain: td, Node: node}
	switch svc, isSvc := strings.CutPrefix(u.Path, "/svc/"); {
	case u.Path == "/node":
	case isSvc:
		if err := validateServiceName(svc); err != nil {
			return fail("%v", err)
		}
		id.Service = svc
	default:
		return fail("path %q is neither /node nor /svc/SERVICE", u.Path)
	}
	return id, nil
}

// spiffeHost checks that u is a spiffe URI made of a host and a path only,
// and returns the host lowercased.
func spiffeHost(u *url.URL) (string, error) {
	switch {
	case !strings.EqualFold(u.Scheme, "spiffe"):
		return "", fmt.Errorf("scheme is %q, want spiffe", u.Scheme)
	case u.Opaque != "" || u.Host == "":
		return "", errors.New("no host")
	case u.User != nil:
		return "", errors.New("has user information")
	case strings.Contains(u.Host, ":"):
		return "", errors.New("has a port")
	case u.RawQuery != "" || u.ForceQuery:
		return "", errors.New("has a query")
	case u.Fragment != "" || u.RawFragment != "":
		return "", errors.New("has a fragment")
	case u.RawPath != "":
		return "", errors.New("has escapes in its path")
	}
	return strings.ToLower(u.Host), nil
}

// nodeHost is the host of a node's identities, lowercased (see ID).
func nodeHost(node, trustDomain string) string {
	return strings.ToLower(node + "." + trustDomain)
}

const (
	// maxNodeNameLen is the agent's own limit on node names, and the
	// longest DNS label, which a node name is in a host.
	maxNodeNameLen = 63
	// maxServiceNameLen bounds a service name, which is in the path.
	maxServiceNameLen = 128
	// maxTrustDomainLen leaves room for a node name in front of the trust
	// domain within DNS's 253: NODE.TRUSTDOMAIN is a host.
	maxTrustDomainLen = 253 - maxNodeNameLen - 1
	maxLabelLen       = 63
)

var (
	// nodeNameRe is the agent's rule for node names (node.Config.Validate).
	nodeNameRe = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?$`)
	// serviceNameRe starts with a letter or digit so that a name is never
	// the dot segment "." or "..".
	serviceNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	labelRe       = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)
)

func validateNodeName(node string) error {
	if len(node) > maxNodeNameLen || !nodeNameRe.MatchString(node) {
		return fmt.Errorf("node name %q must be 1-%d letters, digits, '-' or '_', starting and ending with a letter or digit", node, maxNodeNameLen)
	}
	return nil
}

func validateServiceName(service string) error {
	if len(service) > maxServiceNameLen || !serviceNameRe.MatchString(service) {
		return fmt.Errorf("service name %q must be 1-%d letters, digits, '-', '_' or '.', starting with a letter or digit", service, maxServiceNameLen)
	}
	return nil
}

func validateTrustDomain(td string) error {
	bad := len(td) == 0 || len(td) > maxTrustDomainLen
	for _, label := range strings.Split(td, ".") {
		if len(label) > maxLabelLen || !labelRe.MatchString(label) {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("trust domain %q must be a DNS name of at most %d characters: dot-separated labels of lowercase letters, digits and '-'", td, maxTrustDomainLen)
	}
	return nil
}
