package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// outputFormat is how a command prints what it got from the agent.
type outputFormat string

const (
	formatTable outputFormat = "table"
	formatJSON  outputFormat = "json"
)

// formatFlag is the --format flag of the commands that print data.
func formatFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "format",
		Usage: "output `FORMAT`: table or json",
		Value: string(formatTable),
	}
}

// parseFormat checks --format; commands call it before any request.
func parseFormat(c *cli.Context) (outputFormat, error) {
	switch f := outputFormat(c.String("format")); f {
	case formatTable, formatJSON:
		return f, nil
	default:
		return "", fmt.Errorf("invalid --format %q: want table or json", f)
	}
}

// writeJSON prints v indented, the way the CLI's json formats look.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newTable returns a writer that aligns tab-separated columns; the caller
// must Flush it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}
