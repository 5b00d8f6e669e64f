package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/hcl"
	"github.com/urfave/cli/v2"
)

// maxEntryFile bounds what "config write" reads. The agent takes far less
// (an entry's body is at most 64 KiB); this only keeps a wrong file, or an
// endless stdin, from being read whole.
const maxEntryFile = 1 << 20

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "write, read, list and delete the cluster's configuration entries",
		Description: `Configuration entries are cluster-wide settings keyed by kind and name,
as Consul's: service-defaults (a service's protocol, load balancing, meta)
and service-intentions (which sources may call a service). Any agent takes
a write and spreads it to every other.

   shoal config write web-defaults.hcl
   shoal config read --kind service-defaults --name web
   shoal config list --kind service-intentions
   shoal config delete --kind service-defaults --name web`,
		Subcommands: []*cli.Command{
			{
				Name:      "write",
				Usage:     "create or replace the entry in FILE (HCL or JSON; - reads stdin)",
				ArgsUsage: "FILE",
				Description: `FILE holds one entry, in HCL or JSON, with Consul's field names in
CamelCase (Kind, Name, LoadBalancer) or snake_case (kind, name,
load_balancer); the keys of Meta are kept as written. Kind and Name are
required.

With --cas, the entry is written only if its ModifyIndex is still
--modify-index (read it with "shoal config read"); --modify-index 0 writes
only an entry that does not exist yet.`,
				Flags:        withClientFlags(casFlags()...),
				Action:       runConfigWrite,
				OnUsageError: subcommandUsageError,
			},
			{
				Name:         "read",
				Usage:        "print an entry as JSON",
				ArgsUsage:    " ",
				Flags:        withClientFlags(kindFlag(), nameFlag()),
				Action:       runConfigRead,
				OnUsageError: subcommandUsageError,
			},
			{
				Name:         "list",
				Usage:        "print the names of the entries of a kind, one per line",
				ArgsUsage:    " ",
				Flags:        withClientFlags(kindFlag()),
				Action:       runConfigList,
				OnUsageError: subcommandUsageError,
			},
			{
				Name:      "delete",
				Usage:     "delete an entry",
				ArgsUsage: " ",
				Description: `With --cas, the entry is deleted only if its ModifyIndex is still
--modify-index.`,
				Flags:        withClientFlags(append([]cli.Flag{kindFlag(), nameFlag()}, casFlags()...)...),
				Action:       runConfigDelete,
				OnUsageError: subcommandUsageError,
			},
		},
		Action: groupAction,
	}
}

// withClientFlags is the flags of a client subcommand: --http-addr, extra,
// then --token and the TLS flags, which newApp adds to top-level commands
// only.
func withClientFlags(extra ...cli.Flag) []cli.Flag {
	return append(append([]cli.Flag{httpAddrFlag()}, extra...), clientFlags()...)
}

func kindFlag() cli.Flag {
	return &cli.StringFlag{Name: "kind", Usage: "`KIND` of the entry: service-defaults, service-intentions"}
}

func nameFlag() cli.Flag {
	return &cli.StringFlag{Name: "name", Usage: "`NAME` of the entry (for most kinds, the service's)"}
}

func casFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "cas", Usage: "check-and-set: act only if the entry's ModifyIndex is still --modify-index"},
		&cli.Uint64Flag{Name: "modify-index", Usage: "the entry's `INDEX` for --cas, as \"shoal config read\" shows it"},
	}
}

// casOption is what --cas and --modify-index ask for.
type casOption struct {
	set   bool
	index uint64
}

func parseCAS(c *cli.Context) (casOption, error) {
	switch {
	case c.Bool("cas") && !c.IsSet("modify-index"):
		return casOption{}, errors.New("--cas needs --modify-index INDEX: the ModifyIndex the entry must still have")
	case !c.Bool("cas") && c.IsSet("modify-index"):
		return casOption{}, errors.New("--modify-index is only used with --cas")
	}
	return casOption{set: c.Bool("cas"), index: c.Uint64("modify-index")}, nil
}

// query is the ?cas=N the agent reads, or nothing.
func (o casOption) query() string {
	if !o.set {
		return ""
	}
	return "?cas=" + strconv.FormatUint(o.index, 10)
}

// refused explains the agent's answer false to a write or delete of key.
func (o casOption) refused(verb, key string) error {
	switch {
	case !o.set:
		// Only a check-and-set is expected to be refused.
		return fmt.Errorf("config %s %s: the agent answered false", verb, key)
	case o.index == 0 && verb == "write":
		return fmt.Errorf("CAS check failed: %s already exists (--modify-index 0 writes only a new entry); nothing written", key)
	default:
		return fmt.Errorf("CAS check failed: %s changed since ModifyIndex %d (read it again); nothing done", key, o.index)
	}
}

// noArgs refuses positional arguments to a subcommand that takes flags only.
func noArgs(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments, got %q (see \"%s --help\")", c.Command.HelpName, args[0], c.Command.HelpName)
	}
	return nil
}

// requiredFlags returns the values of the string flags names, or one error
// naming every one that is missing or blank.
func requiredFlags(c *cli.Context, names ...string) ([]string, error) {
	vals := make([]string, len(names))
	var errs []error
	for i, n := range names {
		vals[i] = c.String(n)
		if strings.TrimSpace(vals[i]) == "" {
			errs = append(errs, fmt.Errorf("--%s is required", n))
		}
	}
	return vals, joinErrors(errs)
}

// entryPath is the API path of entry kind/name, or of the kind's list when
// name is empty.
func entryPath(kind, name string) string {
	p := "/v1/config/" + url.PathEscape(kind)
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

func isNotFound(err error) bool {
	var se *statusError
	return errors.As(err, &se) && se.code == http.StatusNotFound
}

func runConfigWrite(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return fmt.Errorf("config write takes one FILE (or - for stdin), got %d arguments", len(args))
	}
	cas, err := parseCAS(c)
	if err != nil {
		return err
	}
	entry, err := loadEntry(args[0], c.App.Reader)
	if err != nil {
		return err
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	key := entry.kind + "/" + entry.name
	var written bool
	if err := client.put(c.Context, "/v1/config"+cas.query(), entry.body, &written); err != nil {
		return fmt.Errorf("config write %s: %w", key, err)
	}
	if !written {
		return cas.refused("write", key)
	}
	fmt.Fprintf(c.App.Writer, "Config entry written: %s\n", key)
	return nil
}

func runConfigRead(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	vals, err := requiredFlags(c, "kind", "name")
	if err != nil {
		return err
	}
	kind, name := vals[0], vals[1]
	client, err := newClient(c)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := client.get(c.Context, entryPath(kind, name), &raw); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("no config entry %s/%s", kind, name)
		}
		return fmt.Errorf("config read %s/%s: %w", kind, name, err)
	}
	// Indenting the agent's bytes, rather than a decoded map, keeps its
	// field order and its numbers exactly.
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("config read %s/%s: %w", kind, name, err)
	}
	out.WriteByte('\n')
	_, err = c.App.Writer.Write(out.Bytes())
	return err
}

func runConfigList(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	vals, err := requiredFlags(c, "kind")
	if err != nil {
		return err
	}
	kind := vals[0]
	client, err := newClient(c)
	if err != nil {
		return err
	}
	var entries []struct{ Name string }
	if err := client.get(c.Context, entryPath(kind, ""), &entries); err != nil {
		return fmt.Errorf("config list %s: %w", kind, err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name
	}
	sort.Strings(names) // the agent sorts too; output must not depend on it
	for _, n := range names {
		fmt.Fprintln(c.App.Writer, n)
	}
	return nil
}

func runConfigDelete(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	vals, err := requiredFlags(c, "kind", "name")
	if err != nil {
		return err
	}
	cas, err := parseCAS(c)
	if err != nil {
		return err
	}
	kind, name := vals[0], vals[1]
	client, err := newClient(c)
	if err != nil {
		return err
	}
	key := kind + "/" + name
	var deleted bool
	if err := client.do(c.Context, http.MethodDelete, entryPath(kind, name)+cas.query(), nil, &deleted); err != nil {
		return fmt.Errorf("config delete %s: %w", key, err)
	}
	if !deleted {
		return cas.refused("delete", key)
	}
	fmt.Fprintf(c.App.Writer, "Config entry deleted: %s\n", key)
	return nil
}

// configEntry is an entry as "config write" sends it.
type configEntry struct {
	kind, name string
	// body is the entry with the agent's key names (see normalizeObject).
	body map[string]any
}

// loadEntry reads and parses the entry in the file path, or in stdin if
// path is "-".
func loadEntry(path string, stdin io.Reader) (*configEntry, error) {
	src, r := "stdin", stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("config write: %w", err)
		}
		defer f.Close()
		src, r = path, f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxEntryFile+1))
	if err != nil {
		return nil, fmt.Errorf("config write: read %s: %w", src, err)
	}
	if len(b) > maxEntryFile {
		return nil, fmt.Errorf("config write: %s is over %d bytes: not a config entry", src, maxEntryFile)
	}
	entry, err := parseEntry(b)
	if err != nil {
		return nil, fmt.Errorf("config write: %s: %w", src, err)
	}
	return entry, nil
}

// parseEntry decodes one entry, JSON if it starts with "{", else HCL.
func parseEntry(b []byte) (*configEntry, error) {
	trimmed := bytes.TrimSpace(b)
	var raw map[string]any
	switch {
	case len(trimmed) == 0:
		return nil, errors.New("empty: want one config entry in HCL or JSON")
	case trimmed[0] == '[':
		return nil, errors.New("a JSON list: want one config entry, an object")
	case trimmed[0] == '{':
		// HCL's own JSON parser drops what it cannot read (see
		// node.LoadConfigFile); encoding/json reports it. UseNumber keeps
		// integers exact.
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("invalid JSON: %v", err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, errors.New("invalid JSON: more after the entry's closing brace")
		}
	default:
		if err := hcl.Decode(&raw, string(b)); err != nil {
			return nil, fmt.Errorf("invalid HCL: %s", oneLine(err.Error()))
		}
	}
	body, err := normalizeObject(raw)
	if err != nil {
		return nil, err
	}
	e := &configEntry{body: body}
	var errs []error
	for _, f := range []struct {
		key string
		dst *string
	}{{"Kind", &e.kind}, {"Name", &e.name}} {
		switch v, ok := body[f.key].(string); {
		case body[f.key] == nil:
			errs = append(errs, fmt.Errorf("no %s", f.key))
		case !ok:
			errs = append(errs, fmt.Errorf("%s must be a string, got %v", f.key, body[f.key]))
		case strings.TrimSpace(v) == "":
			errs = append(errs, fmt.Errorf("empty %s", f.key))
		default:
			*f.dst = v
		}
	}
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return e, nil
}

// listKeys are the fields of Consul's entries that hold lists of objects.
// HCL cannot tell a block (LoadBalancer { ... }) from a list of one object:
// it gives both as a one-element list. A field named here keeps its list;
// any other field given that way gets its one object.
var listKeys = map[string]bool{
	"Sources":         true, // service-intentions
	"Permissions":     true, // service-intentions Sources
	"Header":          true, // Permissions HTTP, router Match HTTP
	"Providers":       true, // JWT
	"HashPolicies":    true, // LoadBalancer
	"Overrides":       true, // UpstreamConfig
	"Paths":           true, // Expose
	"EnvoyExtensions": true,
	"Routes":          true, // service-router
	"QueryParam":      true, // service-router Match HTTP
	"Splits":          true, // service-splitter
	"Targets":         true, // service-resolver Failover
}

// userDataKeys are the fields whose keys are the user's data, not field
// names: they are sent as written (Meta, and the header names of
// RequestHeaders and ResponseHeaders).
var userDataKeys = map[string]bool{"Meta": true, "Add": true, "Set": true}

// namedObjectKeys are the fields that map the user's names to objects
// (service-resolver's subsets and failovers by subset): the names are sent
// as written, the objects normalized.
var namedObjectKeys = map[string]bool{"Subsets": true, "Failover": true}

// normalizeObject returns m as the agent reads entries: every key in
// CamelCase (Consul's CLI takes snake_case too) and every object that HCL
// gave as a one-element list as the object.
func normalizeObject(m map[string]any) (map[string]any, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // so that a duplicate is reported the same way each time
	out := make(map[string]any, len(m))
	given := make(map[string]string, len(m))
	for _, k := range keys {
		ck := camelKey(k)
		if prev, dup := given[ck]; dup {
			return nil, fmt.Errorf("%q and %q are both the field %s", prev, k, ck)
		}
		given[ck] = k
		if userDataKeys[ck] {
			out[ck] = hclObject(ck, m[k])
			continue
		}
		if obj, ok := hclObject(ck, m[k]).(map[string]any); ok && namedObjectKeys[ck] {
			named := make(map[string]any, len(obj))
			for name, v := range obj {
				n, err := normalizeValue(name, v)
				if err != nil {
					return nil, fmt.Errorf("%s[%s]: %w", ck, name, err)
				}
				named[name] = n
			}
			out[ck] = named
			continue
		}
		v, err := normalizeValue(ck, m[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ck, err)
		}
		out[ck] = v
	}
	return out, nil
}

// normalizeValue normalizes v, the value of the field key.
func normalizeValue(key string, v any) (any, error) {
	switch v := hclObject(key, v).(type) {
	case map[string]any:
		return normalizeObject(v)
	case []map[string]any:
		list := make([]any, len(v))
		for i, m := range v {
			n, err := normalizeObject(m)
			if err != nil {
				return nil, err
			}
			list[i] = n
		}
		return list, nil
	case []any:
		list := make([]any, len(v))
		for i, e := range v {
			n, err := normalizeValue("", e)
			if err != nil {
				return nil, err
			}
			list[i] = n
		}
		return list, nil
	default:
		return v, nil
	}
}

// hclObject unwraps v, the value of the field key, if it is HCL's form of
// one object: a []map[string]any of one element. HCL gives a list written
// as [ ... ] as []any, which is left alone.
func hclObject(key string, v any) any {
	if l, ok := v.([]map[string]any); ok && len(l) == 1 && !listKeys[key] {
		return l[0]
	}
	return v
}

// initialisms are the words Consul's field names write in capitals
// (ExternalSNI, MutualTLSMode, HTTP).
var initialisms = map[string]string{
	"http": "HTTP", "id": "ID", "ip": "IP", "jwt": "JWT", "sni": "SNI",
	"tls": "TLS", "ttl": "TTL", "uri": "URI", "url": "URL",
}

// camelKey turns a snake_case or lowerCamel key into Consul's CamelCase
// field name: load_balancer is LoadBalancer, external_sni ExternalSNI. A key
// that starts with a capital and has no underscore is already one.
func camelKey(k string) string {
	first, _ := utf8.DecodeRuneInString(k)
	if unicode.IsUpper(first) && !strings.Contains(k, "_") {
		return k
	}
	var b strings.Builder
	for _, part := range strings.Split(k, "_") {
		if part == "" {
			continue
		}
		if up, ok := initialisms[part]; ok {
			b.WriteString(up)
			continue
		}
		r, size := utf8.DecodeRuneInString(part)
		b.WriteRune(unicode.ToUpper(r))
		b.WriteString(part[size:])
	}
	return b.String()
}
