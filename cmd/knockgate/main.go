// Command knockgate is wiring and client commands. run parses flags, makes
// the logger, loads the policy, turns SIGHUP into a reload and SIGINT and
// SIGTERM into a stop, and hands the rest to the daemon package
// (daemon.New(cfg).Run(ctx)). The other commands are clients and tools:
// status, revoke and reload talk to the daemon over its control socket
// (controlclient.go); knock, sequence and spa (spaclient.go) send a door's
// knocks or SPA packet; validate, fmt, rules and keygen work on policy
// files. Policy parsing lives in rules, decisions in verdict, kernel I/O in
// gate, metric names in metrics.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is stamped by the Makefile with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the gate daemon in the foreground", cmdRun},
		{"validate", "check a policy file and report every error with file:line:col", cmdValidate},
		{"fmt", "format HCL policy files the way terraform fmt does", cmdFmt},
		{"knock", "send a door's knock sequence to a host", cmdKnock},
		{"sequence", "print a door's knock sequence (the current one for TOTP doors)", cmdSequence},
		{"spa", "send a door's Single Packet Authorization packet to a host", cmdSPA},
		{"keygen", "print a fresh SPA key pair in fwknop's format, or a TOTP secret", cmdKeygen},
		{"rules", "print the static steering rules (iptables, ip6tables or nftables)", cmdRules},
		{"status", "show the running daemon's grants and tracked sources", cmdStatus},
		{"revoke", "end a source's grant for a door at once", cmdRevoke},
		{"reload", "make the running daemon re-read its policy, keeping grants", cmdReload},
		{"version", "print the version", cmdVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "knockgate: a port-knocking gate that decides every new connection through NFQUEUE\n\nUsage:\n  knockgate <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'knockgate <command> --help' for a command's flags.\n")
}

// errUsage marks errors that flag parsing has already explained.
var errUsage = errors.New("usage")

// exitError carries an exit status without another message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		var ee exitError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		case errors.As(err, &ee):
			return ee.code
		}
		fmt.Fprintf(stderr, "knockgate %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "knockgate: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// newFlags makes a flag set whose --help names the command and its purpose.
func newFlags(name, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: knockgate %s %s\n\n%s\n", name, synopsis, about)
		var n int
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", "Print knockgate's version.", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "knockgate %s\n", version)
	return nil
}
