package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// watchRetryMax caps the pause between attempts while the agent is
// unreachable.
const watchRetryMax = 10 * time.Second

func watchCommand() *cli.Command {
	flags := func(extra ...cli.Flag) []cli.Flag {
		fs := []cli.Flag{
			httpAddrFlag(),
			formatFlag(),
			&cli.DurationFlag{Name: "wait", Value: 5 * time.Minute, Usage: "longest `DURATION` of one blocking query (at most 10m)"},
		}
		// newApp gives --token and the TLS flags to top-level commands
		// only; these are subcommands.
		return append(append(fs, extra...), clientFlags()...)
	}
	return &cli.Command{
		Name:  "watch",
		Usage: "stream changes of the services or of one service's instances",
		Description: `Prints the current state, then one timestamped line per change until
Ctrl-C, using blocking queries (?index=N&wait=D): nothing is polled. With
--format json each line is one JSON object.

If the agent becomes unreachable, watch retries with backoff and, once it
answers again, reports what changed meanwhile.`,
		Subcommands: []*cli.Command{
			{
				Name:      "services",
				Usage:     "stream services appearing, disappearing and changing health",
				ArgsUsage: " ",
				Description: `Events: present (at start), added, removed, health (the count of
instances by health changed) and tags.`,
				Flags:        flags(),
				Action:       runWatchServices,
				OnUsageError: usageError,
			},
			{
				Name:      "service",
				Usage:     "stream the instances of service NAME: added, removed, health changed",
				ArgsUsage: "NAME",
				Description: `Events: present (at start), added, removed, health (with the output of
the check that failed) and changed (address, port or tags). With --passing
only passing instances are considered, as ?passing does: an instance that
turns critical is removed.`,
				Flags:        flags(&cli.BoolFlag{Name: "passing", Usage: "consider only instances whose checks all pass"}),
				Action:       runWatchService,
				OnUsageError: usageError,
			},
		},
	}
}

// watchEvent is one line of watch's output; --format json prints it as it
// is, one object per line.
type watchEvent struct {
	Time    time.Time
	Event   string // present, added, removed, health, changed, tags
	Service string
	// Instance fields (watch service).
	ID      string   `json:",omitempty"`
	Node    string   `json:",omitempty"`
	Address string   `json:",omitempty"`
	Tags    []string `json:",omitempty"`
	Health  string   `json:",omitempty"`
	// Previous is the health (or for "changed", the address and tags)
	// before the change.
	Previous string `json:",omitempty"`
	// Output is the output of the worst check, for instances not passing.
	Output string `json:",omitempty"`
	// Service counts (watch services).
	Instances, Passing, Warning, Critical *int `json:",omitempty"`
}

// watcher runs one watch: a blocking query, a diff and the printing.
type watcher struct {
	client *apiClient
	format outputFormat
	out    io.Writer
	errOut io.Writer
	wait   time.Duration
	now    func() time.Time
	// what is watched, for messages: "services", "service web".
	what string
}

func newWatcher(c *cli.Context) (*watcher, error) {
	format, err := parseFormat(c)
	if err != nil {
		return nil, err
	}
	wait := c.Duration("wait")
	if wait < time.Second || wait > 10*time.Minute {
		return nil, fmt.Errorf("invalid --wait %v: want 1s to 10m", wait)
	}
	client, err := newClient(c)
	if err != nil {
		return nil, err
	}
	// A blocking query is held up to wait plus the agent's jitter (1/16).
	client.http.Timeout = wait + wait/16 + requestTimeout
	return &watcher{client: client, format: format, out: c.App.Writer, errOut: c.App.ErrWriter, wait: wait, now: time.Now}, nil
}

func runWatchServices(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("watch services takes no arguments, got %q", args)
	}
	w, err := newWatcher(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	w.what = "services"
	var prev map[string]serviceSummary
	return w.loop(ctx, "/v1/catalog/services", func(ctx context.Context, body []byte) error {
		var catalog map[string][]string
		if err := json.Unmarshal(body, &catalog); err != nil {
			return fmt.Errorf("decode the service list: %w", err)
		}
		cur := make(map[string]serviceSummary, len(catalog))
		for name := range catalog {
			entries, err := w.instances(ctx, name, false)
			if err != nil {
				return err
			}
			if len(entries) > 0 { // gone between the two reads
				cur[name] = summarize(name, entries)
			}
		}
		w.emit(diffServices(prev, cur, w.now()))
		prev = cur
		return nil
	})
}

func runWatchService(c *cli.Context) error {
	args, err := commandArgs(c)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return fmt.Errorf("watch service takes one service name, got %d arguments", len(args))
	}
	name := args[0]
	w, err := newWatcher(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	path := "/v1/health/service/" + url.PathEscape(name)
	if c.Bool("passing") {
		path += "?passing"
	}
	w.what = fmt.Sprintf("service %q", name)
	if c.Bool("passing") {
		w.what += " (passing instances)"
	}
	var prev map[string]watchInstance
	return w.loop(ctx, path, func(_ context.Context, body []byte) error {
		var entries []watchEntry
		if err := json.Unmarshal(body, &entries); err != nil {
			return fmt.Errorf("decode the instances of %q: %w", name, err)
		}
		cur := instanceMap(entries)
		w.emit(diffInstances(name, prev, cur, w.now()))
		prev = cur
		return nil
	})
}

// loop runs the blocking query on path until ctx ends, handing each
// answer to changed. The first request's failure is returned (a wrong
// address fails at once); later ones are retried with backoff, since an
// agent restart should not end a watch.
func (w *watcher) loop(ctx context.Context, path string, changed func(context.Context, []byte) error) error {
	var index uint64
	first := true
	backoff := 250 * time.Millisecond
	for {
		body, next, err := w.blockingGet(ctx, path, index)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		if err == nil {
			err = changed(ctx, body)
		}
		var se *statusError
		switch {
		case err == nil:
		case first, errors.As(err, &se) && se.code != http.StatusInternalServerError && se.code != http.StatusServiceUnavailable:
			return err
		default:
			fmt.Fprintf(w.errOut, "%s watch: %s; retrying in %v\n", w.now().Format(time.DateTime), oneLine(err.Error()), backoff)
			index = 0
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, watchRetryMax)
			continue
		}
		if first {
			// On stderr: stdout carries only events.
			fmt.Fprintf(w.errOut, "Watching %s at %s; Ctrl-C stops.\n", w.what, w.client.addr)
		}
		first = false
		backoff = 250 * time.Millisecond
		// Consul's rule for blocking clients: an index that went back (a
		// restarted agent) or is zero starts over.
		if next < index || next == 0 {
			next = 0
		}
		index = next
	}
}

// blockingGet is a GET of path as a blocking query after index (none when
// 0), returning the body and the X-Consul-Index of the answer.
func (w *watcher) blockingGet(ctx context.Context, path string, index uint64) ([]byte, uint64, error) {
	base, err := w.client.baseURL()
	if err != nil {
		return nil, 0, err
	}
	u := base + path
	if index > 0 {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		u += sep + "index=" + strconv.FormatUint(index, 10) + "&wait=" + strconv.Itoa(int(w.wait/time.Second)) + "s"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s: %w", path, err)
	}
	if w.client.token != "" {
		req.Header.Set("X-Consul-Token", w.client.token)
	}
	resp, err := w.client.http.Do(req)
	if err != nil {
		return nil, 0, &unreachableError{addr: w.client.addr, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return nil, 0, &statusError{code: resp.StatusCode, status: resp.Status, reason: firstLine(b)}
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, &unreachableError{addr: w.client.addr, err: err}
	}
	next, _ := strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	return body, next, nil
}

// instances reads the instances of a service (not as a blocking query).
func (w *watcher) instances(ctx context.Context, name string, passing bool) ([]watchEntry, error) {
	path := "/v1/health/service/" + url.PathEscape(name)
	if passing {
		path += "?passing"
	}
	var entries []watchEntry
	if err := w.client.get(ctx, path, &entries); err != nil {
		return nil, fmt.Errorf("list instances of %q: %w", name, err)
	}
	return entries, nil
}

// emit prints events in the chosen format.
func (w *watcher) emit(events []watchEvent) {
	for _, e := range events {
		if w.format == formatJSON {
			b, _ := json.Marshal(e)
			fmt.Fprintf(w.out, "%s\n", b)
			continue
		}
		fmt.Fprintln(w.out, e.line())
	}
}

// line is the event as one line of text.
func (e watchEvent) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-8s %s", e.Time.Format(time.DateTime), e.Event, e.Service)
	if e.ID != "" {
		fmt.Fprintf(&b, "  %s on %s  %s", e.ID, e.Node, e.Address)
		if e.Event != "removed" {
			fmt.Fprintf(&b, "  %s", e.Health)
		}
		if e.Previous != "" {
			fmt.Fprintf(&b, " (was %s)", e.Previous)
		}
		if len(e.Tags) > 0 && e.Event != "removed" {
			fmt.Fprintf(&b, "  tags=%s", strings.Join(e.Tags, ","))
		}
		if e.Output != "" {
			fmt.Fprintf(&b, "  output: %s", e.Output)
		}
		return b.String()
	}
	if e.Instances != nil {
		fmt.Fprintf(&b, "  %s", countsText(*e.Instances, *e.Passing, *e.Warning, *e.Critical))
	}
	if e.Previous != "" {
		fmt.Fprintf(&b, " (was %s)", e.Previous)
	}
	if len(e.Tags) > 0 && e.Event != "removed" {
		fmt.Fprintf(&b, "  tags=%s", strings.Join(e.Tags, ","))
	}
	return b.String()
}

// watchEntry is the part of Consul's ServiceEntry that watch follows.
type watchEntry struct {
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
	Checks []struct {
		CheckID string
		Name    string
		Status  string
		Output  string
	}
}

// watchInstance is an instance as watch compares it.
type watchInstance struct {
	ID, Node, Address string
	Tags              []string
	Health, Output    string
}

// instanceMap keys instances by node and ID: IDs are unique per agent only.
func instanceMap(entries []watchEntry) map[string]watchInstance {
	out := make(map[string]watchInstance, len(entries))
	for _, e := range entries {
		in := watchInstance{ID: e.Service.ID, Node: e.Node.Node, Health: "passing", Tags: e.Service.Tags}
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		in.Address = host
		if e.Service.Port != 0 {
			in.Address = hostPort(host, e.Service.Port)
		}
		if in.Tags == nil {
			in.Tags = []string{}
		}
		for _, c := range e.Checks {
			status := c.Status
			if status == "" {
				status = "critical"
			}
			if healthRank(status) > healthRank(in.Health) {
				in.Health = status
				in.Output = checkOutput(c.Name, c.Output)
			}
		}
		out[in.Node+"/"+in.ID] = in
	}
	return out
}

// checkOutput is a check's output cut to one short line.
func checkOutput(name, output string) string {
	s := strings.Join(strings.Fields(output), " ")
	if r := []rune(s); len(r) > 160 {
		s = string(r[:160]) + "..."
	}
	if name != "" && s != "" {
		return name + ": " + s
	}
	return s
}

func hostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// diffInstances returns the events that turn prev into cur; a nil prev is
// the first state, reported as present.
func diffInstances(service string, prev, cur map[string]watchInstance, now time.Time) []watchEvent {
	var events []watchEvent
	ev := func(kind string, in watchInstance) watchEvent {
		return watchEvent{Time: now, Event: kind, Service: service, ID: in.ID, Node: in.Node,
			Address: in.Address, Tags: in.Tags, Health: in.Health, Output: in.Output}
	}
	for _, key := range sortedKeys(cur) {
		in := cur[key]
		old, had := prev[key]
		switch {
		case prev == nil:
			events = append(events, ev("present", in))
		case !had:
			events = append(events, ev("added", in))
		case old.Health != in.Health:
			e := ev("health", in)
			e.Previous = old.Health
			events = append(events, e)
		case old.Address != in.Address || strings.Join(old.Tags, ",") != strings.Join(in.Tags, ","):
			e := ev("changed", in)
			e.Previous = old.Address
			if len(old.Tags) > 0 {
				e.Previous += " tags=" + strings.Join(old.Tags, ",")
			}
			events = append(events, e)
		}
	}
	for _, key := range sortedKeys(prev) {
		if _, ok := cur[key]; !ok {
			e := ev("removed", prev[key])
			e.Output = ""
			events = append(events, e)
		}
	}
	return events
}

// serviceSummary is a service as watch services compares it.
type serviceSummary struct {
	Tags                                  []string
	Instances, Passing, Warning, Critical int
}

func summarize(name string, entries []watchEntry) serviceSummary {
	s := serviceSummary{Tags: []string{}}
	tags := map[string]bool{}
	for _, in := range instanceMap(entries) {
		s.Instances++
		switch in.Health {
		case "passing":
			s.Passing++
		case "warning":
			s.Warning++
		default:
			s.Critical++
		}
		for _, t := range in.Tags {
			tags[t] = true
		}
	}
	for t := range tags {
		s.Tags = append(s.Tags, t)
	}
	sort.Strings(s.Tags)
	return s
}

func (s serviceSummary) text() string {
	return countsText(s.Instances, s.Passing, s.Warning, s.Critical)
}

// countsText is "3 instances: 2 passing, 1 critical".
func countsText(n, passing, warning, critical int) string {
	word := "instances"
	if n == 1 {
		word = "instance"
	}
	var parts []string
	for _, p := range []struct {
		n    int
		name string
	}{{passing, "passing"}, {warning, "warning"}, {critical, "critical"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.name))
		}
	}
	return fmt.Sprintf("%d %s: %s", n, word, strings.Join(parts, ", "))
}

// diffServices returns the events that turn prev into cur; a nil prev is
// the first state, reported as present.
func diffServices(prev, cur map[string]serviceSummary, now time.Time) []watchEvent {
	var events []watchEvent
	ev := func(kind, name string, s serviceSummary) watchEvent {
		return watchEvent{Time: now, Event: kind, Service: name, Tags: s.Tags,
			Instances: &s.Instances, Passing: &s.Passing, Warning: &s.Warning, Critical: &s.Critical}
	}
	for _, name := range sortedKeys(cur) {
		s := cur[name]
		old, had := prev[name]
		switch {
		case prev == nil:
			events = append(events, ev("present", name, s))
		case !had:
			events = append(events, ev("added", name, s))
		case old.text() != s.text():
			e := ev("health", name, s)
			e.Previous = old.text()
			events = append(events, e)
		case strings.Join(old.Tags, ",") != strings.Join(s.Tags, ","):
			e := ev("tags", name, s)
			e.Previous = "tags=" + strings.Join(old.Tags, ",")
			events = append(events, e)
		}
	}
	for _, name := range sortedKeys(prev) {
		if _, ok := cur[name]; !ok {
			events = append(events, watchEvent{Time: now, Event: "removed", Service: name})
		}
	}
	return events
}
