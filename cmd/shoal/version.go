package main

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:   "version",
		Usage:  "print the version of this binary",
		Action: runVersion,
	}
}

func runVersion(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("version takes no arguments, got %q", c.Args().Slice())
	}
	fmt.Fprintf(c.App.Writer, "shoal %s\n", version)
	fmt.Fprintf(c.App.Writer, "built with %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
