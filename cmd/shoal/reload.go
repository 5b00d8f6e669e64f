package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "make the agent re-read its node PKI files (CA bundle, node certificate and key)",
		Description: `As SIGHUP does: the agent loads --ca-file, --node-cert-file and
--node-key-file again, reissues its leaf certificates and signs its catalog
anew, with no restart and no dropped connection. Files that do not load
change nothing, and the agent says why.`,
		Flags:  []cli.Flag{httpAddrFlag()},
		Action: runReload,
	}
}

func runReload(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("reload takes no arguments, got %q", args)
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}
	if err := client.put(c.Context, "/v1/agent/reload", nil, nil); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "the agent at %s reloaded its configuration\n", client.addr)
	return nil
}
