package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/knockgate/knockgate/rules"
)

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", "[--config FILE] [FILE ...]",
		"Check policy files: each FILE and the --config one (the default policy\n"+
			"when no file is given). Every error is printed with file:line:col and\n"+
			"the source line; the exit status is 1 when any policy is invalid.", stdout, stderr)
	config := fs.String("config", "", "policy `file` (default /etc/knockgate/policy.hcl when no FILE is given)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	files := fs.Args()
	if *config != "" {
		files = append([]string{*config}, files...)
	}
	if len(files) == 0 {
		files = []string{"/etc/knockgate/policy.hcl"}
	}
	failed := 0
	for _, f := range files {
		if err := validateOne(f, stdout, stderr); err != nil {
			failed++
			var ee exitError
			if !errors.As(err, &ee) {
				fmt.Fprintf(stderr, "knockgate validate: %v\n", err)
			}
		}
	}
	if failed > 0 {
		if len(files) > 1 {
			fmt.Fprintf(stderr, "knockgate validate: %d of %d policies invalid\n", failed, len(files))
		}
		return exitError{1}
	}
	return nil
}

// validateOne checks one policy file and reports it on stdout when valid.
func validateOne(path string, stdout, stderr io.Writer) error {
	p, err := loadPolicy(path, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: valid, %d door(s), queue %d\n", path, len(p.Doors), p.Queue)
	for _, w := range p.Warnings() {
		fmt.Fprintf(stderr, "warning: %v\n", w)
	}
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
