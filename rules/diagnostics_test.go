package rules

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestErrorWriteText(t *testing.T) {
	src := "door \"ssh\" {\n  sequence = [\"tcp/7000\", \"tcp/0\"]\n  open     = [\"tcp/22\"]\n}\n"
	_, err := Parse([]byte(src), "policy.hcl")
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("Parse gave %v, want *Error", err)
	}
	var b bytes.Buffer
	if err := perr.WriteText(&b, 0, false); err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	for _, want := range []string{
		`Error: invalid port "tcp/0" in door "ssh" sequence`,
		`on policy.hcl line 2, in door "ssh":`,
		`2:   sequence = ["tcp/7000", "tcp/0"]`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("WriteText output lacks %q:\n%s", want, b.String())
		}
	}
}
