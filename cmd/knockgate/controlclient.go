package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/knockgate/knockgate/daemon"
	"github.com/knockgate/knockgate/rules"
)

// The operator's commands for a running daemon: each sends one request
// over the control socket (daemon.Client) and prints the answer.

// Exit statuses of the control commands beyond 0 (done), 1 (the daemon
// refused, or another failure) and 2 (usage): a script must tell "no
// daemon" from "the daemon said no".
const (
	exitNoDaemon = 3 // no daemon answered on the socket
	exitNoAnswer = 4 // a daemon took the request but its answer never came
)

// controlError turns a daemon.Client error into the command's error and
// exit status.
func controlError(err error, stderr io.Writer, cmd string) error {
	var refused *daemon.RefusedError
	switch {
	case errors.As(err, &refused):
		return err
	case errors.Is(err, daemon.ErrNoDaemon):
		fmt.Fprintf(stderr, "knockgate %s: %v\n", cmd, err)
		return exitError{exitNoDaemon}
	}
	fmt.Fprintf(stderr, "knockgate %s: %v\n", cmd, err)
	return exitError{exitNoAnswer}
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "[--socket PATH | --config FILE] [--json] [--verbose] [--watch SECONDS]",
		"Show the running daemon's live grants per door (source, ports, time left,\n"+
			"connections left, the gateway that made it), the penalty box (banned\n"+
			"sources and when their ban ends) and the knocks in progress per door\n"+
			"(per source with --verbose). --watch redraws it in place every SECONDS\n"+
			"until interrupted.", stdout, stderr)
	socket := socketFlags(fs)
	asJSON := fs.Bool("json", false, "print the raw JSON report")
	verbose := fs.Bool("verbose", false, "list every source with a knock in progress")
	watch := fs.Int("watch", 0, "redraw every `seconds` until interrupted (0: print once)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *watch < 0 {
		return usageErrorf("invalid --watch %d: want a number of seconds, at least 1", *watch)
	}
	path, err := socket(stderr)
	if err != nil {
		return err
	}
	c := daemon.Client{Socket: path}
	show := func() error {
		st, err := c.Status()
		if err != nil {
			return controlError(err, stderr, "status")
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		}
		return printStatus(stdout, st, *verbose)
	}
	if *watch == 0 {
		return show()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return watchLoop(ctx, stdout, time.Duration(*watch)*time.Second, show)
}

// watchLoop clears the terminal and redraws with show every period until
// ctx is done; an error of show ends it.
func watchLoop(ctx context.Context, stdout io.Writer, period time.Duration, show func() error) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		// Home the cursor and clear the screen: the report redraws in
		// place, as watch(1) does.
		io.WriteString(stdout, "\x1b[H\x1b[2J")
		if err := show(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// socketFlags defines --socket and --config on a control command's flags;
// the function it returns gives the socket to use once they are parsed.
func socketFlags(fs *flagSet) func(stderr io.Writer) (string, error) {
	socket := fs.String("socket", "", "control socket `path` of the daemon (default: the policy's control_socket, else "+rules.DefaultControlSocket+")")
	config := fs.String("config", "", "policy `file` to read control_socket from")
	return func(stderr io.Writer) (string, error) { return socketPath(*socket, *config, stderr) }
}

// socketPath is the control socket to use: --socket, else the --config
// policy's control_socket, else the default.
func socketPath(socket, config string, stderr io.Writer) (string, error) {
	switch {
	case socket != "" && config != "":
		return "", usageErrorf("--socket and --config exclude each other: the socket is either given or read from the policy")
	case socket != "":
		return socket, nil
	case config != "":
		p, err := loadPolicy(config, stderr)
		if err != nil {
			return "", err
		}
		return p.ControlSocket, nil
	}
	return rules.DefaultControlSocket, nil
}

// printStatus prints a status report for a person.
func printStatus(w io.Writer, st *daemon.StatusReport, verbose bool) error {
	fmt.Fprintf(w, "knockgate %s on %s, policy %s, queue %s\n", st.Version, st.Node, st.Policy, rules.QueueRange(st.Queue.Queue, st.Queue.Queues))
	if st.Degraded != "" {
		fmt.Fprintf(w, "DEGRADED: %s\n", st.Degraded)
	}
	fmt.Fprintf(w, "sources with a knock in progress: %d of %d; grants: %d of %d; evictions: %d\n",
		st.TrackedSources, st.MaxSources, st.Grants, st.MaxGrants, st.Evictions)
	fmt.Fprintf(w, "packets: %d (accepted %d, dropped %d, malformed %d)\n\n",
		st.Queue.Packets, st.Queue.Accepted, st.Queue.Dropped, st.Queue.Malformed)
	if st.StateFile.SaveFailures > 0 {
		fmt.Fprintf(w, "state file: %d failed saves\n", st.StateFile.SaveFailures)
	}
	if len(st.HeldClosed) > 0 {
		fmt.Fprintf(w, "closed until restart (a reload stopped protecting them): %s\n", strings.Join(st.HeldClosed, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if st.Cluster != nil {
		printCluster(tw, st.Cluster, st.Now)
	}
	// Each grant says which gateway made it: this one unless a cluster
	// peer did.
	self := st.Node
	if st.Cluster != nil {
		self = cmp.Or(st.Cluster.Node, self)
	}
	fmt.Fprintln(tw, "DOOR\tSOURCE\tPORTS\tLEFT\tUNTIL\tCONNS LEFT\tORIGIN")
	for _, d := range st.Doors {
		if len(d.Grants) == 0 {
			fmt.Fprintf(tw, "%s\t-\t\t\t\t\t\n", d.Name)
		}
		for _, g := range d.Grants {
			conns := "-"
			if g.ConnsLeft > 0 {
				conns = fmt.Sprint(g.ConnsLeft)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, g.Source, strings.Join(g.Ports, ","),
				seconds(g.LeftSeconds), g.Until.Local().Format(time.RFC3339), conns, cmp.Or(g.Origin, self))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nbanned sources: %d\n", len(st.Bans)+st.BansOmitted)
	if len(st.Bans) > 0 {
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tLEFT\tUNTIL")
		for _, b := range st.Bans {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", b.Source, seconds(b.LeftSeconds), b.Until.Local().Format(time.RFC3339))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if st.BansOmitted > 0 {
			fmt.Fprintf(w, "... and %d more\n", st.BansOmitted)
		}
	}
	fmt.Fprintf(w, "\nknocks in progress:")
	for _, k := range st.Knocks {
		fmt.Fprintf(w, " %s %d;", k.Door, k.Sources)
	}
	fmt.Fprintln(w)
	if verbose && len(st.Progress) > 0 {
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "DOOR\tSOURCE\tKNOCKS\tSTARTED")
		for _, p := range st.Progress {
			of := "?"
			if p.Of > 0 {
				of = fmt.Sprint(p.Of)
			}
			door := p.Door
			if p.Close {
				door += " (close)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d of %s\t%s\n", door, p.Source, p.Step, of, p.Started.Local().Format(time.RFC3339))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if st.ProgressOmitted > 0 {
			fmt.Fprintf(w, "... and %d more\n", st.ProgressOmitted)
		}
	}
	return nil
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Second)
}

func cmdUnban(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("unban", "--source ADDR [--socket PATH | --config FILE]",
		"Lift a source's ban from the penalty box at once, and forget its failures.", stdout, stderr)
	source := fs.String("source", "", "source `address` whose ban to lift")
	socket := socketFlags(fs)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := requireFlags(map[string]string{"source": *source}); err != nil {
		return err
	}
	path, err := socket(stderr)
	if err != nil {
		return err
	}
	banned, err := daemon.Client{Socket: path}.Unban(*source)
	if err != nil {
		return controlError(err, stderr, "unban")
	}
	if banned {
		fmt.Fprintf(stdout, "lifted %s's ban\n", *source)
	} else {
		fmt.Fprintf(stdout, "%s was not banned\n", *source)
	}
	return nil
}

// printCluster lists the members of the cluster: state, how long ago each
// was last heard from, its clock's skew, and whether its policy differs.
func printCluster(tw *tabwriter.Writer, c *daemon.ClusterStatus, now time.Time) {
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tLAST CONTACT\tSKEW\tPOLICY")
	for _, m := range c.Members {
		contact, skew, policy := "never", "-", "same"
		switch {
		case m.Self:
			contact, policy = "(this gateway)", "-"
		case !m.LastContact.IsZero():
			contact = now.Sub(m.LastContact).Round(time.Millisecond).String() + " ago"
			skew = time.Duration(m.SkewSeconds * float64(time.Second)).Round(time.Millisecond).String()
		}
		if m.PolicyDiffers {
			policy = "differs"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, m.State, contact, skew, policy)
	}
	fmt.Fprintln(tw)
}

func cmdRevoke(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("revoke", "--door NAME --source ADDR [--socket PATH | --config FILE]",
		"End a source's grant for a door at once. New connections from it are\ndropped; connections already open carry on.", stdout, stderr)
	door := fs.String("door", "", "door `name`")
	source := fs.String("source", "", "source `address` whose grant to end")
	socket := socketFlags(fs)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if err := requireFlags(map[string]string{"door": *door, "source": *source}); err != nil {
		return err
	}
	path, err := socket(stderr)
	if err != nil {
		return err
	}
	revoked, err := daemon.Client{Socket: path}.Revoke(*door, *source)
	if err != nil {
		return controlError(err, stderr, "revoke")
	}
	if revoked {
		fmt.Fprintf(stdout, "revoked %s's grant for door %q\n", *source, *door)
	} else {
		fmt.Fprintf(stdout, "%s held no live grant for door %q\n", *source, *door)
	}
	return nil
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", "[--socket PATH | --config FILE]",
		"Make the daemon re-read its policy, as SIGHUP does. Grants and knocks in\n"+
			"progress of doors that still exist are kept. An invalid policy is\n"+
			"refused with its diagnostics and the running policy stays. Changed\n"+
			"settings that wait for a restart (queue, sockets, fail_open) are named.\n\n"+
			"Exit status: 0 reloaded, 1 refused (the running policy stays), 2 usage,\n"+
			"3 no daemon answered on the socket, 4 the daemon's answer never came.", stdout, stderr)
	socket := socketFlags(fs)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	path, err := socket(stderr)
	if err != nil {
		return err
	}
	out, err := daemon.Client{Socket: path}.Reload()
	var refused *daemon.RefusedError
	if errors.As(err, &refused) {
		return fmt.Errorf("reload refused, the running policy stays:\n%w", err)
	}
	if err != nil {
		return controlError(err, stderr, "reload")
	}
	ended := out.Ended
	sort.Strings(ended)
	fmt.Fprintf(stdout, "reloaded: %d door(s)", out.Doors)
	if len(ended) > 0 {
		fmt.Fprintf(stdout, "; grants ended with their doors: %v", ended)
	}
	if len(out.HeldClosed) > 0 {
		fmt.Fprintf(stdout, "; no longer protected, closed until restart: %v", out.HeldClosed)
	}
	fmt.Fprintln(stdout)
	for _, what := range out.RestartOnly {
		fmt.Fprintf(stdout, "warning: %s changed, but takes effect at the next restart: the daemon runs on with the old value\n", what)
	}
	return nil
}
