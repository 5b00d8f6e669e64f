package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

func servicesCommand() *cli.Command {
	return &cli.Command{
		Name:      "services",
		Usage:     "list service instances and their health",
		ArgsUsage: "[NAME]",
		Description: `Lists every instance of every service in the catalog, or of the service
NAME only, with its health: the worst status among the instance's checks
(critical, then warning, then passing; an instance without checks is
passing). An Address is the service's own address or, when it has none, its
node's. It is an error if NAME has no instances.`,
		Flags: []cli.Flag{
			httpAddrFlag(),
			formatFlag(),
			&cli.BoolFlag{Name: "passing", Usage: "show only instances whose health is passing"},
		},
		Action: runServices,
	}
}

// serviceEntry is the part of Consul's ServiceEntry, one element of
// /v1/health/service/:name, that the CLI shows.
type serviceEntry struct {
	Node struct {
		Node    string
		Address string
	}
	Service struct {
		ID      string
		Service string
		Tags    []string
		Address string
		Port    int
	}
	Checks []entryCheck
}

// entryCheck is the part of Consul's HealthCheck that decides health.
type entryCheck struct {
	CheckID string
	Status  string // passing, warning or critical
}

// instanceView is a service instance as "shoal services" prints it.
type instanceView struct {
	Service string
	ID      string
	Node    string
	Address string
	Port    int
	Health  string
	Tags    []string
}

func runServices(c *cli.Context) error {
	format, args, err := formatAndArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 1 {
		return fmt.Errorf("services takes at most one service name, got %d arguments", len(args))
	}
	client, err := newClient(c)
	if err != nil {
		return err
	}

	var names []string
	if len(args) == 1 {
		names = args
	} else {
		var catalog map[string][]string
		if err := client.get(c.Context, "/v1/catalog/services", &catalog); err != nil {
			return fmt.Errorf("list services: %w", err)
		}
		for name := range catalog {
			names = append(names, name)
		}
		sort.Strings(names)
	}

	views := []instanceView{}
	for _, name := range names {
		entries, err := healthService(c.Context, client, name)
		if err != nil {
			return err
		}
		// A service listed by the catalog may be gone by the time its
		// instances are asked for; only a name the user gave must exist.
		if len(entries) == 0 && len(args) == 1 {
			return fmt.Errorf("no service named %q", name)
		}
		for _, e := range entries {
			v := instanceOf(e)
			if c.Bool("passing") && v.Health != "passing" {
				continue
			}
			views = append(views, v)
		}
	}
	sort.SliceStable(views, func(i, j int) bool {
		a, b := views[i], views[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.ID < b.ID
	})

	w := c.App.Writer
	if format == formatJSON {
		return writeJSON(w, views)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "Service\tID\tNode\tAddress\tHealth\tTags")
	for _, v := range views {
		addr := v.Address
		if v.Port != 0 {
			addr = net.JoinHostPort(addr, strconv.Itoa(v.Port))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n",
			v.Service, v.ID, v.Node, addr, v.Health, strings.Join(v.Tags, ","))
	}
	return tw.Flush()
}

func healthService(ctx context.Context, client *apiClient, name string) ([]serviceEntry, error) {
	var entries []serviceEntry
	if err := client.get(ctx, "/v1/health/service/"+url.PathEscape(name), &entries); err != nil {
		return nil, fmt.Errorf("list instances of %q: %w", name, err)
	}
	return entries, nil
}

func instanceOf(e serviceEntry) instanceView {
	v := instanceView{
		Service: e.Service.Service,
		ID:      e.Service.ID,
		Node:    e.Node.Node,
		Address: e.Service.Address,
		Port:    e.Service.Port,
		Health:  "passing",
		Tags:    e.Service.Tags,
	}
	if v.Address == "" {
		v.Address = e.Node.Address
	}
	if v.Tags == nil {
		v.Tags = []string{}
	}
	for _, chk := range e.Checks {
		status := chk.Status
		if status == "" {
			status = "critical" // Consul's initial status of a check
		}
		if healthRank(status) > healthRank(v.Health) {
			v.Health = status
		}
	}
	return v
}

// healthRank orders check statuses from best to worst. A status the CLI
// does not know (Consul's "maintenance", say) ranks as worse than critical,
// so it is shown as it is rather than hidden behind a healthier word.
func healthRank(status string) int {
	switch status {
	case "passing":
		return 0
	case "warning":
		return 1
	case "critical":
		return 2
	default:
		return 3
	}
}
