package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/knockgate/knockgate/rules"
)

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", "--config FILE",
		"Check a policy file. Every error is printed with file:line:col and the\nsource line; the exit status is 1 when the policy is invalid.", stderr)
	config := fs.String("config", "/etc/knockgate/policy.hcl", "policy `file`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	p, err := loadPolicy(*config, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: valid, %d door(s), queue %d\n", *config, len(p.Doors), p.Queue)
	return nil
}

// loadPolicy loads a policy and prints HCL diagnostics, with the offending
// source lines, when it is invalid.
func loadPolicy(path string, stderr io.Writer) (*rules.Policy, error) {
	p, err := rules.Load(path)
	var rerr *rules.Error
	if errors.As(err, &rerr) {
		if err := printPolicyError(stderr, rerr); err != nil {
			return nil, err
		}
		return nil, exitError{1}
	}
	return p, err
}

// printPolicyError prints an invalid policy's diagnostics: first one
// file:line:col line per error, which editors and terminals link to, then
// each with its source lines.
func printPolicyError(stderr io.Writer, rerr *rules.Error) error {
	fmt.Fprintf(stderr, "%s\n\n", rerr.Error())
	if err := rerr.WriteText(stderr, 0, false); err != nil {
		return fmt.Errorf("failed to print diagnostics: %w", err)
	}
	return nil
}
