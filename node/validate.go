package node

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"

	"github.com/shoal-mesh/shoal/gossip"
)

// Limits on registrations. Names are DNS labels so that NAME.service.shoal
// and the proxy's Host routing stay unambiguous.
const (
	maxNameLen     = 63
	maxIDLen       = 128
	maxTags        = 64
	maxTagLen      = 256
	maxMetaPairs   = 64
	maxMetaKeyLen  = 128
	maxMetaValLen  = 1024
	maxChecks      = 32
	maxWeight      = 65535
	maxHostnameLen = 253
	minInterval    = 100 * time.Millisecond
)

var (
	nameRe     = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?$`)
	idRe       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)
	metaKeyRe  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	hostnameRe = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)
	methodRe   = regexp.MustCompile(`^[A-Z]{1,16}$`)
)

// validateName checks a service name.
func validateName(name string) error {
	if name == "" {
		return errors.New("missing service name")
	}
	if len(name) > maxNameLen || !nameRe.MatchString(name) {
		return fmt.Errorf("service name %q must be 1-%d letters, digits, '-' or '_', starting and ending with a letter or digit", name, maxNameLen)
	}
	return nil
}

// validateID checks a service or check ID.
func validateID(what, id string) error {
	if len(id) > maxIDLen || !idRe.MatchString(id) {
		return fmt.Errorf("%s %q must be 1-%d letters, digits, '-', '_', '.' or ':', starting with a letter or digit", what, id, maxIDLen)
	}
	return nil
}

// validateText checks free text from users (tags, meta values, notes): valid
// UTF-8 without control or bidirectional-override characters.
func validateText(what, s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%s is %d bytes, over the limit of %d", what, len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return fmt.Errorf("%s contains the forbidden character %U", what, r)
		}
	}
	return nil
}

// validateMeta checks user metadata: bounded pairs, plain keys, clean text.
func validateMeta(meta map[string]string) error {
	if len(meta) > maxMetaPairs {
		return fmt.Errorf("%d meta pairs, over the limit of %d", len(meta), maxMetaPairs)
	}
	for k, v := range meta {
		if len(k) > maxMetaKeyLen || !metaKeyRe.MatchString(k) {
			return fmt.Errorf("meta key %q must be 1-%d letters, digits, '-' or '_'", k, maxMetaKeyLen)
		}
		if err := validateText(fmt.Sprintf("meta value of %q", k), v, maxMetaValLen); err != nil {
			return err
		}
	}
	return nil
}

// validateAddress checks a service address: empty, an IP or a hostname.
func validateAddress(addr string) error {
	if addr == "" || net.ParseIP(addr) != nil {
		return nil
	}
	if len(addr) > maxHostnameLen || !hostnameRe.MatchString(addr) {
		return fmt.Errorf("address %q is neither an IP address nor a hostname", addr)
	}
	return nil
}

func validatePort(what string, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s %d is out of range 1-65535", what, port)
	}
	return nil
}

// normalizeService validates a registration, fills in its defaults (ID from
// Name, weights 1/1, check IDs and names) and returns its checks in their
// initial state. It reports the first problem found.
func normalizeService(def *ServiceDefinition) ([]*checkState, error) {
	if err := validateName(def.Name); err != nil {
		return nil, err
	}
	if def.ID == "" {
		def.ID = def.Name
	}
	if err := validateID("service ID", def.ID); err != nil {
		return nil, err
	}
	if err := normalizeUpstreams(def); err != nil {
		return nil, err
	}
	if def.Kind != "" {
		return nil, fmt.Errorf("service kind %q is not supported: only typical services can be registered", def.Kind)
	}
	if len(def.Tags) > maxTags {
		return nil, fmt.Errorf("%d tags, over the limit of %d", len(def.Tags), maxTags)
	}
	for _, t := range def.Tags {
		if t == "" {
			return nil, errors.New("empty tag")
		}
		if err := validateText(fmt.Sprintf("tag %q", t), t, maxTagLen); err != nil {
			return nil, err
		}
	}
	if def.Port != nil {
		if err := validatePort("port", *def.Port); err != nil {
			return nil, err
		}
	}
	if err := validateAddress(def.Address); err != nil {
		return nil, err
	}
	if err := validateMeta(def.Meta); err != nil {
		return nil, err
	}
	// Empty and absent are the same: store them one way.
	if len(def.Tags) == 0 {
		def.Tags = nil
	}
	if len(def.Meta) == 0 {
		def.Meta = nil
	}
	if def.Weights == nil {
		def.Weights = &Weights{Passing: 1, Warning: 1}
	}
	if w := def.Weights; w.Passing < 1 || w.Passing > maxWeight || w.Warning < 0 || w.Warning > maxWeight {
		return nil, fmt.Errorf("weights passing=%d warning=%d: passing must be 1-%d and warning 0-%d", w.Passing, w.Warning, maxWeight, maxWeight)
	}

	defs := def.Checks
	if def.Check != nil {
		defs = append([]*CheckDefinition{def.Check}, defs...)
	}
	def.Check, def.Checks = nil, nil
	if len(defs) > maxChecks {
		return nil, fmt.Errorf("%d checks, over the limit of %d", len(defs), maxChecks)
	}
	checks := make([]*checkState, 0, len(defs))
	seen := make(map[string]bool)
	for i, cd := range defs {
		if cd == nil {
			return nil, fmt.Errorf("check %d is null", i+1)
		}
		c := *cd
		if c.CheckID == "" {
			c.CheckID = c.ID
		}
		if c.CheckID == "" {
			c.CheckID = "service:" + def.ID
			if len(defs) > 1 {
				c.CheckID = fmt.Sprintf("service:%s:%d", def.ID, i+1)
			}
		}
		c.ID = ""
		if len(c.Header) == 0 {
			c.Header = nil
		}
		if c.Name == "" {
			c.Name = fmt.Sprintf("Service '%s' check", def.Name)
		}
		c.ServiceID = def.ID
		if seen[c.CheckID] {
			return nil, fmt.Errorf("duplicate check ID %q", c.CheckID)
		}
		seen[c.CheckID] = true
		if err := normalizeCheck(&c); err != nil {
			return nil, err
		}
		checks = append(checks, &checkState{Def: c, Status: c.Status})
	}
	return checks, nil
}

// normalizeCheck validates a check definition whose CheckID is set.
func normalizeCheck(c *CheckDefinition) error {
	if err := validateID("check ID", c.CheckID); err != nil {
		return err
	}
	if err := validateText("check name", c.Name, maxTagLen); err != nil {
		return err
	}
	if err := validateText("check notes", c.Notes, maxMetaValLen); err != nil {
		return err
	}
	if len(c.Args) > 0 || len(c.ScriptArgs) > 0 {
		return fmt.Errorf("check %q: script checks are not supported", c.CheckID)
	}
	kinds := 0
	for _, set := range []bool{c.HTTP != "", c.TCP != "", c.GRPC != "", c.TTL != 0} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return fmt.Errorf("check %q must have exactly one of HTTP, TCP, GRPC or TTL", c.CheckID)
	}
	switch c.Status {
	case "":
		c.Status = gossip.StatusCritical
	case gossip.StatusPassing, gossip.StatusWarning, gossip.StatusCritical:
	default:
		return fmt.Errorf("check %q: status %q must be passing, warning or critical", c.CheckID, c.Status)
	}
	for name, d := range map[string]duration{"Interval": c.Interval, "Timeout": c.Timeout, "TTL": c.TTL,
		"DeregisterCriticalServiceAfter": c.DeregisterCriticalServiceAfter} {
		if d < 0 {
			return fmt.Errorf("check %q: %s %v is negative", c.CheckID, name, time.Duration(d))
		}
	}
	for name, n := range map[string]int{"SuccessBeforePassing": c.SuccessBeforePassing,
		"FailuresBeforeWarning": c.FailuresBeforeWarning, "FailuresBeforeCritical": c.FailuresBeforeCritical} {
		if n < 0 || n > 1000 {
			return fmt.Errorf("check %q: %s %d must be 0-1000", c.CheckID, name, n)
		}
	}
	if c.TTL == 0 && time.Duration(c.Interval) < minInterval {
		return fmt.Errorf("check %q: Interval %v must be at least %v", c.CheckID, time.Duration(c.Interval), minInterval)
	}
	switch {
	case c.HTTP != "":
		u, err := url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("check %q: HTTP %q must be an http:// or https:// URL", c.CheckID, c.HTTP)
		}
		if c.Method != "" && !methodRe.MatchString(c.Method) {
			return fmt.Errorf("check %q: method %q is not an HTTP method", c.CheckID, c.Method)
		}
		if err := validateCheckRequest(c); err != nil {
			return fmt.Errorf("check %q: %w", c.CheckID, err)
		}
	case c.GRPC != "":
		return fmt.Errorf("check %q: GRPC checks are not supported; use an HTTP or TCP check", c.CheckID)
	case c.TCP != "":
		host, port, err := net.SplitHostPort(strings.TrimPrefix(c.TCP, "tcp://"))
		if err != nil || host == "" || port == "" || len(c.TCP) > maxURLLen {
			return fmt.Errorf("check %q: TCP %q must be host:port", c.CheckID, c.TCP)
		}
	}
	return nil
}

// validateJoinAddr checks a gossip address to join: an IP or a hostname,
// and a port in 1-65535.
func validateJoinAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host or host:port")
	}
	if host == "" {
		return errors.New("missing host")
	}
	if err := validateAddress(host); err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("port %q is not a number", port)
	}
	return validatePort("port", p)
}

// Limits on what an HTTP check sends.
const (
	maxURLLen         = 2048
	maxCheckHeaders   = 64
	maxHeaderValues   = 16
	maxHeaderValueLen = 1024
	maxCheckBody      = 64 << 10
)

// validateCheckRequest checks the request an HTTP check makes: URL length,
// header names and values (no CR/LF smuggling) and body size.
func validateCheckRequest(c *CheckDefinition) error {
	if len(c.HTTP) > maxURLLen {
		return fmt.Errorf("HTTP URL of %d bytes: at most %d", len(c.HTTP), maxURLLen)
	}
	if len(c.Header) > maxCheckHeaders {
		return fmt.Errorf("%d headers: at most %d", len(c.Header), maxCheckHeaders)
	}
	for k, vs := range c.Header {
		if len(k) > maxTagLen || !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("header name %q is not a valid HTTP header name of at most %d bytes", truncate(k, 64), maxTagLen)
		}
		if len(vs) > maxHeaderValues {
			return fmt.Errorf("header %s: %d values, at most %d", k, len(vs), maxHeaderValues)
		}
		for _, v := range vs {
			if len(v) > maxHeaderValueLen || !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("header %s: value %q must be at most %d bytes without control characters", k, truncate(v, 64), maxHeaderValueLen)
			}
		}
	}
	if len(c.Body) > maxCheckBody {
		return fmt.Errorf("body of %d bytes: at most %d", len(c.Body), maxCheckBody)
	}
	return nil
}

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
