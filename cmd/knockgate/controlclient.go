package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/knockgate/knockgate/daemon"
	"github.com/knockgate/knockgate/rules"
)

// The operator's commands for a running daemon: each sends one request
// over the control socket (daemon.Client) and prints the answer.

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "[--socket PATH] [--json]",
		"Show the running daemon's live grants per door, with source and time\nleft, and how many sources have a knock in progress.", stderr)
	socket := fs.String("socket", rules.DefaultControlSocket, "control socket `path` of the daemon")
	asJSON := fs.Bool("json", false, "print the raw JSON report")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := daemon.Client{Socket: *socket}.Status()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(stdout, "knockgate %s, policy %s, queue %s\n", st.Version, st.Policy, rules.QueueRange(st.Queue.Queue, st.Queue.Queues))
	fmt.Fprintf(stdout, "sources with a knock in progress: %d of %d; grants: %d of %d; evictions: %d\n",
		st.TrackedSources, st.MaxSources, st.Grants, st.MaxGrants, st.Evictions)
	fmt.Fprintf(stdout, "packets: %d (accepted %d, dropped %d, malformed %d)\n\n",
		st.Queue.Packets, st.Queue.Accepted, st.Queue.Dropped, st.Queue.Malformed)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if st.Cluster != nil {
		printCluster(tw, st.Cluster, st.Now)
	}
	// In a cluster, each grant says which gateway made it.
	origin := func(string) string { return "" }
	if st.Cluster != nil {
		origin = func(o string) string { return "\t" + cmp.Or(o, st.Cluster.Node) }
	}
	fmt.Fprintln(tw, "DOOR\tSOURCE\tLEFT\tUNTIL"+origin("ORIGIN"))
	for _, d := range st.Doors {
		if len(d.Grants) == 0 {
			fmt.Fprintf(tw, "%s\t-\t\t\n", d.Name)
		}
		for _, g := range d.Grants {
			left := time.Duration(g.LeftSeconds * float64(time.Second)).Round(time.Second)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s%s\n", d.Name, g.Source, left, g.Until.Local().Format(time.RFC3339), origin(g.Origin))
		}
	}
	return tw.Flush()
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
	fs := newFlags("revoke", "--door NAME --source ADDR [--socket PATH]",
		"End a source's grant for a door at once. New connections from it are\ndropped; connections already open carry on.", stderr)
	door := fs.String("door", "", "door `name`")
	source := fs.String("source", "", "source `address` whose grant to end")
	socket := fs.String("socket", rules.DefaultControlSocket, "control socket `path` of the daemon")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *door == "" || *source == "" {
		fs.Usage()
		return errUsage
	}
	revoked, err := daemon.Client{Socket: *socket}.Revoke(*door, *source)
	if err != nil {
		return err
	}
	if revoked {
		fmt.Fprintf(stdout, "revoked %s's grant for door %q\n", *source, *door)
	} else {
		fmt.Fprintf(stdout, "%s held no live grant for door %q\n", *source, *door)
	}
	return nil
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", "[--socket PATH]",
		"Make the daemon re-read its policy, as SIGHUP does. Grants and knocks in\n"+
			"progress of doors that still exist are kept. An invalid policy is\n"+
			"refused with its diagnostics and the running policy stays.", stderr)
	socket := fs.String("socket", rules.DefaultControlSocket, "control socket `path` of the daemon")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	out, err := daemon.Client{Socket: *socket}.Reload()
	if err != nil {
		return fmt.Errorf("reload refused, the running policy stays:\n%w", err)
	}
	ended := out.Ended
	sort.Strings(ended)
	fmt.Fprintf(stdout, "reloaded: %d door(s)", out.Doors)
	if len(ended) > 0 {
		fmt.Fprintf(stdout, "; grants ended with their doors: %v", ended)
	}
	fmt.Fprintln(stdout)
	return nil
}
