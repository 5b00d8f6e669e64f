package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

func registerCommand() *cli.Command {
	return &cli.Command{
		Name:      "register",
		Usage:     "register a service with the agent",
		ArgsUsage: "[FILE.json]",
		Description: `Registers a service instance owned by the agent, described either by flags
or by FILE.json: one JSON object in the format of PUT
/v1/agent/service/register (Consul's AgentServiceRegistration), sent as it
is. Flags and a file cannot be mixed. Without --id the agent uses the name
as the ID.

  shoal register --name web --port 8080 --tag v2 --meta version=2.1
  shoal register web.json`,
		Flags: []cli.Flag{
			httpAddrFlag(),
			&cli.StringFlag{Name: "name", Usage: "service `NAME` (required without a file)"},
			&cli.StringFlag{Name: "id", Usage: "instance `ID`, unique on this agent (default: the name)"},
			&cli.StringFlag{Name: "address", Usage: "`ADDRESS` of the instance (default: the node's)"},
			&cli.IntFlag{Name: "port", Usage: "`PORT` of the instance, 1-65535", DefaultText: "none"},
			&cli.StringSliceFlag{Name: "tag", Usage: "a `TAG` of the service (repeatable)"},
			&cli.StringSliceFlag{Name: "meta", Usage: "a `KEY=VALUE` metadata pair (repeatable)"},
		},
		Action: runRegister,
	}
}

// serviceRegistration is the body of PUT /v1/agent/service/register built
// from flags: the fields of Consul's AgentServiceRegistration that the flags
// set.
type serviceRegistration struct {
	ID      string            `json:"ID,omitempty"`
	Name    string            `json:"Name"`
	Tags    []string          `json:"Tags,omitempty"`
	Address string            `json:"Address,omitempty"`
	Port    int               `json:"Port,omitempty"`
	Meta    map[string]string `json:"Meta,omitempty"`
}

func runRegister(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	var body any
	var id string
	switch {
	case len(args) > 1:
		return fmt.Errorf("register takes at most one file, got %d arguments", len(args))
	case len(args) == 1:
		for _, f := range []string{"name", "id", "address", "port", "tag", "meta"} {
			if c.IsSet(f) {
				return fmt.Errorf("--%s cannot be used with a file: describe the service in %s or with flags, not both", f, args[0])
			}
		}
		raw, fileID, err := readRegistration(args[0])
		if err != nil {
			return err
		}
		body, id = raw, fileID
	default:
		reg, err := registrationFromFlags(c)
		if err != nil {
			return err
		}
		body, id = reg, reg.ID
		if id == "" {
			id = reg.Name
		}
	}

	client, err := newClient(c)
	if err != nil {
		return err
	}
	if err := client.put(c.Context, "/v1/agent/service/register", body, nil); err != nil {
		return fmt.Errorf("register service %q: %w", id, err)
	}
	fmt.Fprintf(c.App.Writer, "registered service %q\n", id)
	return nil
}

// registrationFromFlags builds a registration from the flags, with every
// problem found reported at once.
func registrationFromFlags(c *cli.Context) (serviceRegistration, error) {
	reg := serviceRegistration{
		ID:      strings.TrimSpace(c.String("id")),
		Name:    strings.TrimSpace(c.String("name")),
		Address: strings.TrimSpace(c.String("address")),
		Tags:    c.StringSlice("tag"),
	}
	var errs []error
	if reg.Name == "" {
		errs = append(errs, errors.New("--name is required (or give a FILE.json)"))
	}
	if c.IsSet("port") {
		reg.Port = c.Int("port")
		if reg.Port < 1 || reg.Port > 65535 {
			errs = append(errs, fmt.Errorf("--port %d is out of range 1-65535", reg.Port))
		}
	}
	for _, t := range reg.Tags {
		if strings.TrimSpace(t) == "" {
			errs = append(errs, errors.New("--tag must not be empty"))
			break
		}
	}
	for _, kv := range c.StringSlice("meta") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		_, dup := reg.Meta[k]
		switch {
		case !ok || k == "":
			errs = append(errs, fmt.Errorf("--meta %q: want KEY=VALUE", kv))
		case dup:
			errs = append(errs, fmt.Errorf("--meta key %q given twice", k))
		default:
			if reg.Meta == nil {
				reg.Meta = map[string]string{}
			}
			reg.Meta[k] = v
		}
	}
	if len(errs) > 0 {
		return reg, joinErrors(errs)
	}
	return reg, nil
}

// readRegistration reads a registration file. Its content is sent as it is,
// so the agent judges the fields; here it is only checked to be one JSON
// object, and its ID (or Name) is taken for messages.
func readRegistration(path string) (json.RawMessage, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("read registration: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, "", fmt.Errorf("%s: want one JSON object (a service registration), got %s", path, typeErr.Value)
		}
		return nil, "", fmt.Errorf("%s: not valid JSON: %w", path, err)
	}
	if obj == nil {
		return nil, "", fmt.Errorf("%s: want one JSON object (a service registration), got null", path)
	}
	id, name := jsonString(obj, "ID"), jsonString(obj, "Name")
	// Consul's agent configuration files wrap the same object in
	// {"Service": {...}}; the API takes the object itself.
	if _, wrapped := lookupFold(obj, "Service"); wrapped && name == "" {
		return nil, "", fmt.Errorf(`%s: looks like an agent configuration file ({"Service": {...}}); give the registration object itself`, path)
	}
	if id == "" {
		id = name
	}
	return json.RawMessage(b), id, nil
}

// jsonString is obj's string field key, matched case-insensitively as
// encoding/json does, or "" if it is absent or not a string.
func jsonString(obj map[string]json.RawMessage, key string) string {
	raw, ok := lookupFold(obj, key)
	if !ok {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return ""
	}
	return s
}

func lookupFold(obj map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	if v, ok := obj[key]; ok {
		return v, true
	}
	for k, v := range obj {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}
