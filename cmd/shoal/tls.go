package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/shoal-mesh/shoal/node/pki"
)

// The files "shoal tls" writes, named as Consul names its own
// (consul-agent-ca.pem, consul-agent-ca-key.pem).
const (
	caCertFile = "shoal-agent-ca.pem"
	caKeyFile  = "shoal-agent-ca-key.pem"
)

func nodeCertFile(node string) string { return "shoal-node-" + node + ".pem" }
func nodeKeyFile(node string) string  { return "shoal-node-" + node + "-key.pem" }

// maxDays bounds --days: past it a validity is a typo, and far enough past
// it, it would overflow.
const maxDays = 100 * 365

func tlsCommand() *cli.Command {
	return &cli.Command{
		Name:  "tls",
		Usage: "create the mesh's offline PKI: a root CA, then a CA for each node",
		Description: `There is no online CA. An operator creates the root once, keeps its key
offline, and signs a CA for each node; each agent then signs short-lived
certificates for its services itself. A node's CA can sign only identities
of that node (spiffe://NODE.TRUSTDOMAIN/...).

   shoal tls ca create                 # shoal-agent-ca.pem, shoal-agent-ca-key.pem
   shoal tls node create --node web-1  # shoal-node-web-1.pem, shoal-node-web-1-key.pem

Copy shoal-agent-ca.pem and the node's two files to the node. To rotate the
root, create a new one and give agents both roots in one CA file.`,
		Subcommands: []*cli.Command{
			{
				Name:        "ca",
				Usage:       "create the root CA",
				Subcommands: []*cli.Command{tlsCACreateCommand()},
				Action:      groupAction,
			},
			{
				Name:        "node",
				Usage:       "create a node's CA, signed by the root",
				Subcommands: []*cli.Command{tlsNodeCreateCommand()},
				Action:      groupAction,
			},
		},
		Action: groupAction,
	}
}

func tlsCACreateCommand() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "create the root CA of a new trust domain: " + caCertFile + " and " + caKeyFile,
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "trust-domain", Usage: "`DOMAIN` of the mesh's identities, a DNS name (default: a random \"<uuid>.shoal\")"},
			&cli.IntFlag{Name: "days", Value: 5 * 365, Usage: "validity of the CA in `DAYS`"},
			&cli.StringFlag{Name: "dir", Value: ".", Usage: "`DIR` to write the files in"},
		},
		Action:       runTLSCACreate,
		OnUsageError: subcommandUsageError,
	}
}

func tlsNodeCreateCommand() *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "sign the CA of node NAME with the root: shoal-node-NAME.pem and shoal-node-NAME-key.pem",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "node", Usage: "`NAME` of the node, as its agent's --node"},
			&cli.StringFlag{Name: "ca-cert", Value: caCertFile, Usage: "`FILE` of the root CA certificate (may hold several roots)"},
			&cli.StringFlag{Name: "ca-key", Value: caKeyFile, Usage: "`FILE` of the root CA key"},
			&cli.IntFlag{Name: "days", Value: 365, Usage: "validity of the node CA in `DAYS` (never past the root's)"},
			&cli.StringFlag{Name: "dir", Value: ".", Usage: "`DIR` to write the files in"},
		},
		Action:       runTLSNodeCreate,
		OnUsageError: subcommandUsageError,
	}
}

func runTLSCACreate(c *cli.Context) error {
	validFor, dir, err := tlsCheckArgs(c)
	if err != nil {
		return err
	}
	if err := checkAbsent(dir, caCertFile, caKeyFile); err != nil {
		return err
	}
	certPEM, keyPEM, err := pki.CreateCA(c.String("trust-domain"), validFor, time.Now())
	if err != nil {
		return err
	}
	cert, err := firstCert(certPEM)
	if err != nil {
		return err
	}
	if err := writeNewFiles(dir, []newFile{
		{caCertFile, certPEM, 0o644},
		{caKeyFile, keyPEM, 0o600},
	}); err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "wrote %s (the CA certificate, valid until %s: every agent needs it)\n", filepath.Join(dir, caCertFile), day(cert.NotAfter))
	fmt.Fprintf(w, "wrote %s (the CA key: keep it secret and offline)\n", filepath.Join(dir, caKeyFile))
	fmt.Fprintf(w, "trust domain: %s\n", cert.URIs[0].Host)
	return nil
}

func runTLSNodeCreate(c *cli.Context) error {
	validFor, dir, err := tlsCheckArgs(c)
	if err != nil {
		return err
	}
	node := c.String("node")
	if node == "" {
		return errors.New("tls node create needs --node NAME")
	}
	caCert, err := os.ReadFile(c.String("ca-cert"))
	if err != nil {
		return fmt.Errorf("--ca-cert: %w", err)
	}
	caKey, err := os.ReadFile(c.String("ca-key"))
	if err != nil {
		return fmt.Errorf("--ca-key: %w", err)
	}
	certPEM, keyPEM, err := pki.CreateNodeCA(caCert, caKey, node, validFor, time.Now())
	if err != nil {
		return err
	}
	cert, err := firstCert(certPEM)
	if err != nil {
		return err
	}
	// A bad --node is refused above, so it is safe in a file name.
	certName, keyName := nodeCertFile(node), nodeKeyFile(node)
	if err := writeNewFiles(dir, []newFile{
		{certName, certPEM, 0o644},
		{keyName, keyPEM, 0o600},
	}); err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "wrote %s (the CA certificate of node %q, valid until %s)\n", filepath.Join(dir, certName), node, day(cert.NotAfter))
	fmt.Fprintf(w, "wrote %s (its key: keep it secret, on node %q only)\n", filepath.Join(dir, keyName), node)
	fmt.Fprintf(w, "identity: %s\n", cert.URIs[0])
	return nil
}

// tlsCheckArgs checks what both create commands take: no arguments, a
// --days that makes sense and a --dir that is a directory. It returns the
// validity and the directory.
func tlsCheckArgs(c *cli.Context) (time.Duration, string, error) {
	if c.NArg() > 0 {
		return 0, "", fmt.Errorf("%s takes no arguments, got %q (flags go before arguments)", c.Command.HelpName, c.Args().First())
	}
	days := c.Int("days")
	if days < 1 || days > maxDays {
		return 0, "", fmt.Errorf("--days %d is out of range 1-%d", days, maxDays)
	}
	dir := c.String("dir")
	if dir == "" {
		dir = "."
	}
	if fi, err := os.Stat(dir); err != nil {
		return 0, "", fmt.Errorf("--dir: %w", err)
	} else if !fi.IsDir() {
		return 0, "", fmt.Errorf("--dir %s is not a directory", dir)
	}
	return time.Duration(days) * 24 * time.Hour, dir, nil
}

// groupAction runs for a command group alone ("shoal tls", "shoal config",
// ...): it shows the group's help, or refuses an unknown subcommand the way
// the app does.
func groupAction(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("unknown command %q (see \"%s --help\")", c.Args().First(), c.Command.HelpName)
	}
	return cli.ShowSubcommandHelp(c)
}

// subcommandUsageError is usageError for subcommands: it names the whole
// command.
func subcommandUsageError(c *cli.Context, err error, _ bool) error {
	return fmt.Errorf("%w (see \"%s --help\")", err, c.Command.HelpName)
}

func firstCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, errors.New("internal error: no certificate created")
	}
	return x509.ParseCertificate(b.Bytes)
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// newFile is a file writeNewFiles creates.
type newFile struct {
	name string
	data []byte
	mode fs.FileMode
}

// checkAbsent refuses if any of names exists in dir, so that nothing is
// overwritten; the message says nothing was written.
func checkAbsent(dir string, names ...string) error {
	for _, name := range names {
		path := filepath.Join(dir, name)
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s already exists: refusing to overwrite it (nothing written)", path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writeNewFiles creates files in dir: all of them or, on any error, none.
// Each is written to a temporary file and fsynced first, then linked to
// its name, which fails rather than overwrite a file that exists (even one
// created since checkAbsent looked), so no file is ever seen half-written
// or replaced.
func writeNewFiles(dir string, files []newFile) error {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.name
	}
	if err := checkAbsent(dir, names...); err != nil {
		return err
	}
	temps := make([]string, 0, len(files))
	defer func() {
		for _, tmp := range temps {
			os.Remove(tmp)
		}
	}()
	for _, f := range files {
		tmp, err := writeTemp(dir, f)
		if err != nil {
			return err
		}
		temps = append(temps, tmp)
	}
	var linked []string
	for i, f := range files {
		path := filepath.Join(dir, f.name)
		if err := os.Link(temps[i], path); err != nil {
			for _, p := range linked {
				os.Remove(p)
			}
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s already exists: refusing to overwrite it (nothing written)", path)
			}
			return fmt.Errorf("write %s: %w", path, err)
		}
		linked = append(linked, path)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeTemp writes f durably to a new temporary file in dir.
func writeTemp(dir string, f newFile) (string, error) {
	t, err := os.CreateTemp(dir, "."+f.name+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", filepath.Join(dir, f.name), err)
	}
	_, err = t.Write(f.data)
	if err == nil {
		err = t.Chmod(f.mode)
	}
	if err == nil {
		err = t.Sync()
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(t.Name())
		return "", fmt.Errorf("write %s: %w", filepath.Join(dir, f.name), err)
	}
	return t.Name(), nil
}
