// Command shoal is Shoal's single binary: "shoal agent" runs a node of the
// mesh, and the other commands talk to a running agent over its
// Consul-compatible HTTP API.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is the release of this binary.
const version = "0.1.0"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "shoal: %s\n", oneLine(err.Error()))
		os.Exit(1)
	}
}

// newApp builds the command tree. Every call returns an independent app, so
// tests can run it with their own writers.
func newApp() *cli.App {
	app := &cli.App{
		Name:    "shoal",
		Usage:   "a decentralized service mesh",
		Version: version,
		Commands: []*cli.Command{
			agentCommand(),
			membersCommand(),
			servicesCommand(),
			registerCommand(),
			deregisterCommand(),
			joinCommand(),
			leaveCommand(),
			reloadCommand(),
			forceLeaveCommand(),
			infoCommand(),
			versionCommand(),
			maintCommand(),
			keygenCommand(),
			keyringCommand(),
			tlsCommand(),
			demoCommand(),
			watchCommand(),
			rttCommand(),
			configCommand(),
			intentionCommand(),
		},
		// One occurrence of a repeatable flag is one value: a --meta value
		// may contain a comma.
		DisableSliceFlagSeparator: true,
		// main reports errors and picks the exit status; the library must
		// never call os.Exit itself (it would for "shoal help nosuch").
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unknown command %q (see \"shoal --help\")", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
	for _, cmd := range app.Commands {
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = usageError
		}
		if cmd.Name != "agent" && hasFlag(cmd, "http-addr") {
			// Every client command can authenticate to the agent.
			cmd.Flags = append(cmd.Flags, clientFlags()...)
		}
	}
	return app
}

// usageError reports a flag parsing error as one line, instead of the
// library's default of printing the whole help text after it.
func usageError(c *cli.Context, err error, isSubcommand bool) error {
	name := "shoal"
	if isSubcommand && c.Command != nil {
		name += " " + c.Command.Name
	}
	return fmt.Errorf("%w (see \"%s --help\")", err, name)
}

// commandArgs returns the positional arguments of c. Flags are only parsed
// before the first argument, so a flag that follows one would silently
// become an argument ("shoal join 10.0.0.2 --http-addr x" would try to join
// "--http-addr"); it is reported instead.
func commandArgs(c *cli.Context) ([]string, error) {
	args := c.Args().Slice()
	for _, a := range args {
		if len(a) > 1 && strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("flag %s must come before the arguments (see \"%s --help\")", a, c.Command.HelpName)
		}
	}
	return args, nil
}

// formatAndArgs reads what every listing command starts with: the --format
// flag and the positional arguments.
func formatAndArgs(c *cli.Context) (outputFormat, []string, error) {
	format, err := parseFormat(c)
	if err != nil {
		return format, nil, err
	}
	args, err := commandArgs(c)
	return format, args, err
}

// joinErrors reports several problems as one error on one line; it is nil
// if errs is empty and errs[0] itself if there is one.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// oneLine folds a multi-line message so that an error is one line of output.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

// hasFlag reports whether cmd defines a flag named name.
func hasFlag(cmd *cli.Command, name string) bool {
	for _, f := range cmd.Flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}
