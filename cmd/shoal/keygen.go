package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/gossip"
)

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "print a new random gossip encryption key (32 bytes, base64) for --encrypt",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("keygen takes no arguments, got %q", c.Args().First())
			}
			key, err := gossip.NewKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, key)
			return nil
		},
	}
}
