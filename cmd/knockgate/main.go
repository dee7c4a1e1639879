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
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
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
		{"check", "compare the live iptables steering rules with what the policy needs", cmdCheck},
		{"status", "show the running daemon's grants, bans and knocks in progress", cmdStatus},
		{"revoke", "end a source's grant for a door at once", cmdRevoke},
		{"reload", "make the running daemon re-read its policy, keeping grants", cmdReload},
		{"unban", "lift a source's ban from the running daemon's penalty box", cmdUnban},
		{"version", "print the version", cmdVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "knockgate: a port-knocking gate that decides every new connection through NFQUEUE\n\nUsage:\n  knockgate <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'knockgate help <command>' or 'knockgate <command> --help' for a command's flags;\n'knockgate --version' prints the version.\n")
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
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "-v", "-version", "--version":
		return realMain([]string{"version"}, stdout, stderr)
	case "help":
		switch len(args) {
		case 1:
			usage(stdout)
			return 0
		case 2:
			if args[1] == "help" {
				usage(stdout)
				return 0
			}
			return realMain([]string{args[1], "--help"}, stdout, stderr)
		}
		fmt.Fprintf(stderr, "knockgate help: want at most one command, got %q\n", args[1:])
		return 2
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		var ee exitError
		var ue usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		case errors.As(err, &ee):
			return ee.code
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "knockgate %s: %s\nRun 'knockgate help %s' for its usage.\n", c.name, ue.msg, c.name)
			return 2
		}
		fmt.Fprintf(stderr, "knockgate %s: %v\n", c.name, err)
		return 1
	}
	fmt.Fprintf(stderr, "knockgate: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// flagSet is a command's flag set with the two writers its messages go
// to: --help to stdout (what was asked for), usage errors to stderr.
type flagSet struct {
	*flag.FlagSet
	stdout, stderr io.Writer
	buf            bytes.Buffer
}

// newFlags makes a flag set whose --help names the command and its purpose.
func newFlags(name, synopsis, about string, stdout, stderr io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), stdout: stdout, stderr: stderr}
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

// parseFlags parses a command's flags. --help prints the command's help to
// stdout; a bad flag or value is named on stderr, with the usage.
func parseFlags(fs *flagSet, args []string) error {
	fs.buf.Reset()
	fs.SetOutput(&fs.buf)
	err := fs.Parse(args)
	fs.SetOutput(fs.stderr)
	if errors.Is(err, flag.ErrHelp) {
		fs.stdout.Write(fs.buf.Bytes())
		return err
	}
	fs.stderr.Write(fs.buf.Bytes())
	if err != nil {
		return errUsage
	}
	return nil
}

// parseNoArgs parses the flags of a command that takes no arguments, and
// refuses any, rather than ignoring what an operator meant to say.
func parseNoArgs(fs *flagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q: %s takes flags only", fs.Arg(0), fs.Name())
	}
	return nil
}

// requireFlags names the first of the required flags (in name order) left
// empty.
func requireFlags(flags map[string]string) error {
	names := make([]string, 0, len(flags))
	for n := range flags {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if flags[n] == "" {
			return usageErrorf("missing --%s", n)
		}
	}
	return nil
}

// usageError is a command line that cannot be run as given: realMain
// prints it with a pointer to the command's help and exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", "Print knockgate's version.", stdout, stderr)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "knockgate %s\n", version)
	return nil
}
