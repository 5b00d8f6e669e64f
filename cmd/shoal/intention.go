package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/urfave/cli/v2"
)

// deniedError is the answer Denied of "intention check": not a failure of
// the command, but returned as an error so that the process exits 1, as
// Consul's "intention check" does when denied.
type deniedError struct{ src, dst string }

func (e *deniedError) Error() string { return fmt.Sprintf("%s => %s is denied", e.src, e.dst) }

func intentionCommand() *cli.Command {
	return &cli.Command{
		Name:  "intention",
		Usage: "create, delete, check and list intentions: which services may call which",
		Description: `An intention allows or denies connections from a source to a destination
service, as Consul's. A name may be * (any service); a source may also be
node:NAME, the agent of node NAME itself.

   shoal intention create --deny web db
   shoal intention check web db
   shoal intention list`,
		Subcommands: []*cli.Command{
			{
				Name:      "create",
				Usage:     "create the intention SRC => DST (allow unless --deny)",
				ArgsUsage: "SRC DST",
				Description: `Fails if an intention from SRC to DST exists, unless --replace is given:
then it replaces that intention, description included.`,
				Flags: withClientFlags(
					&cli.BoolFlag{Name: "allow", Usage: "allow the connection (the default)"},
					&cli.BoolFlag{Name: "deny", Usage: "deny the connection"},
					&cli.StringFlag{Name: "description", Usage: "`TEXT` saying why"},
					&cli.BoolFlag{Name: "replace", Usage: "replace an existing intention from SRC to DST"},
				),
				Action:       runIntentionCreate,
				OnUsageError: subcommandUsageError,
			},
			{
				Name:         "delete",
				Usage:        "delete the intention SRC => DST",
				ArgsUsage:    "SRC DST",
				Flags:        withClientFlags(),
				Action:       runIntentionDelete,
				OnUsageError: subcommandUsageError,
			},
			{
				Name:      "check",
				Usage:     "print whether SRC may connect to DST: Allowed (exit 0) or Denied (exit 1)",
				ArgsUsage: "SRC DST",
				Description: `Asks the agent whether a connection from SRC to DST would be allowed
now. When the agent runs without the node PKI, nothing enforces
intentions: the answer is followed by a note saying so.`,
				Flags:        withClientFlags(),
				Action:       runIntentionCheck,
				OnUsageError: subcommandUsageError,
			},
			{
				Name:         "list",
				Usage:        "list every intention",
				ArgsUsage:    " ",
				Flags:        withClientFlags(formatFlag()),
				Action:       runIntentionList,
				OnUsageError: subcommandUsageError,
			},
		},
		Action: groupAction,
	}
}

// intention is one element of /v1/connect/intentions, Consul's shape.
type intention struct {
	SourceName      string
	DestinationName string
	SourceType      string
	Action          string // allow or deny
	Precedence      int
	Description     string
	CreateIndex     uint64
	ModifyIndex     uint64
}

// intentionCheck is the answer of /v1/connect/intentions/check.
type intentionCheck struct {
	Allowed bool
	// Enforced is false when the agent runs without the node PKI.
	Enforced bool
	// Reason says in one line which intention, or default, decided.
	Reason string
}

// intentionArgs returns the SRC and DST arguments of c, checked.
func intentionArgs(c *cli.Context) (src, dst string, err error) {
	args, err := commandArgs(c)
	if err != nil {
		return "", "", err
	}
	if len(args) != 2 {
		return "", "", fmt.Errorf("%s takes two arguments, SRC and DST, got %d", c.Command.HelpName, len(args))
	}
	src, dst = args[0], args[1]
	var errs []error
	if err := checkIntentionName("source", src, true); err != nil {
		errs = append(errs, err)
	}
	if err := checkIntentionName("destination", dst, false); err != nil {
		errs = append(errs, err)
	}
	return src, dst, joinErrors(errs)
}

// checkIntentionName checks name, the source or destination (role) of an
// intention: a service name, * or, for a source (nodeOK), node:NAME.
func checkIntentionName(role, name string, nodeOK bool) error {
	svc, isNode := strings.CutPrefix(name, "node:")
	switch {
	case strings.TrimSpace(name) == "":
		return fmt.Errorf("empty %s name", role)
	case isNode && !nodeOK:
		return fmt.Errorf("%s %q: only a source may be a node", role, name)
	case isNode && strings.TrimSpace(svc) == "":
		return fmt.Errorf("%s %q: no node name after node:", role, name)
	case strings.Contains(svc, "*") && svc != "*":
		return fmt.Errorf("%s %q: * must be the whole name", role, name)
	}
	return nil
}

// exactPath is the API path of the intention src => dst.
func exactPath(verb, src, dst string) string {
	return "/v1/connect/intentions/" + verb + "?" + url.Values{"source": {src}, "destination": {dst}}.Encode()
}

func runIntentionCreate(c *cli.Context) error {
	if c.Bool("allow") && c.Bool("deny") {
		return errors.New("--allow and --deny exclude each other")
	}
	action := "allow"
	if c.Bool("deny") {
		action = "deny"
	}
	src, dst, err := intentionArgs(c)
	if err != nil {
		return err
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	path := exactPath("exact", src, dst)
	if !c.Bool("replace") {
		// A race with another writer is possible, as in Consul: the
		// check is for the operator, not a lock.
		var old intention
		switch err := client.get(c.Context, path, &old); {
		case err == nil:
			return fmt.Errorf("intention %s => %s exists; use --replace", src, dst)
		case !isNotFound(err):
			return fmt.Errorf("look up intention %s => %s: %w", src, dst, err)
		}
	}
	body := struct {
		Action      string
		Description string `json:",omitempty"`
	}{action, c.String("description")}
	var written bool
	if err := client.put(c.Context, path, body, &written); err != nil {
		return fmt.Errorf("create intention %s => %s: %w", src, dst, err)
	}
	if !written {
		return fmt.Errorf("create intention %s => %s: the agent answered false", src, dst)
	}
	fmt.Fprintf(c.App.Writer, "Created: %s => %s (%s)\n", src, dst, action)
	return nil
}

func runIntentionDelete(c *cli.Context) error {
	src, dst, err := intentionArgs(c)
	if err != nil {
		return err
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	var deleted bool
	if err := client.do(c.Context, http.MethodDelete, exactPath("exact", src, dst), nil, &deleted); err != nil {
		return fmt.Errorf("delete intention %s => %s: %w", src, dst, err)
	}
	if !deleted {
		return fmt.Errorf("delete intention %s => %s: the agent answered false", src, dst)
	}
	fmt.Fprintf(c.App.Writer, "Intention deleted: %s => %s\n", src, dst)
	return nil
}

func runIntentionCheck(c *cli.Context) error {
	src, dst, err := intentionArgs(c)
	if err != nil {
		return err
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	var ans intentionCheck
	if err := client.get(c.Context, exactPath("check", src, dst), &ans); err != nil {
		return fmt.Errorf("check intention %s => %s: %w", src, dst, err)
	}
	w := c.App.Writer
	if ans.Allowed {
		fmt.Fprintln(w, "Allowed")
	} else {
		fmt.Fprintln(w, "Denied")
	}
	if !ans.Enforced {
		reason := ans.Reason
		if reason == "" {
			reason = "this agent does not enforce intentions"
		}
		fmt.Fprintf(w, "note: %s\n", oneLine(reason))
	}
	if !ans.Allowed {
		return &deniedError{src, dst}
	}
	return nil
}

func runIntentionList(c *cli.Context) error {
	format, err := parseFormat(c)
	if err != nil {
		return err
	}
	if err := noArgs(c); err != nil {
		return err
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	ixns := []intention{}
	if err := client.get(c.Context, "/v1/connect/intentions", &ixns); err != nil {
		return fmt.Errorf("list intentions: %w", err)
	}
	w := c.App.Writer
	if format == formatJSON {
		return writeJSON(w, ixns)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "Source\tAction\tDestination\tPrecedence\tDescription")
	for _, ixn := range ixns {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n",
			cell(ixn.SourceName), cell(ixn.Action), cell(ixn.DestinationName), ixn.Precedence, cell(ixn.Description))
	}
	return tw.Flush()
}

// cell makes s one table cell: a tab or newline in a description would
// break the columns.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}
