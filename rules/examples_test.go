package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

// The examples are documentation; parsing them here keeps them true.
func TestExamples(t *testing.T) {
	paths, err := filepath.Glob("../contrib/examples/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("found %d examples in ../contrib/examples, want at least 3", len(paths))
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			p, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(p.Doors) == 0 {
				t.Errorf("%s has no doors", path)
			}
			if _, err := verdict.NewEngine(p.Policy, time.Unix(0, 0)); err != nil {
				t.Errorf("the engine refuses %s: %v", path, err)
			}
		})
	}
}

// reference.hcl claims to show every default; hold it to that: all its
// settings together must give what its door's sequence and open alone give.
func TestReferenceHasDefaults(t *testing.T) {
	const path = "../contrib/examples/reference.hcl"
	p, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(p.Doors) != 1 {
		t.Fatalf("reference has %d doors, want 1", len(p.Doors))
	}
	d := p.Doors[0]
	bare, err := Parse([]byte(fmt.Sprintf("door %q {\n  sequence = %s\n  open = %s\n}\n",
		d.Name, hclPorts(d.Sequence), hclPorts(d.Open))), path)
	if err != nil {
		t.Fatalf("Parse of the door alone: %v", err)
	}
	if !reflect.DeepEqual(p, bare) {
		t.Errorf("reference.hcl gives\n%+v\nbut the defaults are\n%+v", p, bare)
	}
}

// The spa and totp blocks are commented out, since a door needs real keys;
// the values they show must still be the defaults.
func TestReferenceCommentedBlocks(t *testing.T) {
	src, err := os.ReadFile("../contrib/examples/reference.hcl")
	if err != nil {
		t.Fatal(err)
	}
	enc, mac := newKeys(t)
	set := func(body, name, value string) string {
		re := regexp.MustCompile(`(?m)^(\s*)` + name + `\s*=.*$`)
		if !re.MatchString(body) {
			t.Fatalf("the commented block shows no %s", name)
		}
		return re.ReplaceAllLiteralString(body, value)
	}
	parse := func(block string) verdict.Door {
		t.Helper()
		p, err := Parse([]byte("door \"d\" {\n  open = [\"tcp/22\"]\n"+block+"}\n"), "t.hcl")
		if err != nil {
			t.Fatalf("Parse:\n%s\n%v", block, err)
		}
		return p.Doors[0]
	}

	body := commentedBlock(t, src, "spa")
	body = set(body, "keys_file", "")
	body = set(body, "key_base64", fmt.Sprintf("key_base64 = %q", enc))
	body = set(body, "hmac_key_base64", fmt.Sprintf("hmac_key_base64 = %q", mac))
	got := parse("spa {\n" + body + "}\n").SPA
	want := parse(fmt.Sprintf("spa {\n key_base64 = %q\n hmac_key_base64 = %q\n}\n", enc, mac)).SPA
	// max_open_for has no default of its own (it is open_for); the block
	// shows an example value.
	got.MaxOpenFor = 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the commented spa block gives\n%+v\nbut the defaults are\n%+v", got, want)
	}

	body = commentedBlock(t, src, "totp")
	body = set(body, "secret_file", "")
	body = set(body, "secret_base64", fmt.Sprintf("secret_base64 = %q", secret))
	gotT := parse("totp {\n" + body + "}\n").TOTP
	// ports is required, so it has no default: use the one shown.
	wantT := parse(fmt.Sprintf("totp {\n secret_base64 = %q\n ports = \"%v/%d-%d\"\n}\n", secret, gotT.Proto, gotT.Lo, gotT.Hi)).TOTP
	if !reflect.DeepEqual(gotT, wantT) {
		t.Errorf("the commented totp block gives\n%+v\nbut the defaults are\n%+v", gotT, wantT)
	}
}

// commentedBlock gives the body of the `  # typ {` ... `  # }` block in src,
// uncommented.
func commentedBlock(t *testing.T, src []byte, typ string) string {
	t.Helper()
	_, rest, ok := strings.Cut(string(src), "\n  # "+typ+" {\n")
	body, _, ok2 := strings.Cut(rest, "\n  # }\n")
	if !ok || !ok2 {
		t.Fatalf("reference.hcl has no commented-out %s block", typ)
	}
	var b strings.Builder
	for _, line := range strings.Split(body, "\n") {
		b.WriteString(strings.TrimPrefix(line, "  #") + "\n")
	}
	return b.String()
}

// hclPorts writes ports as an HCL list.
func hclPorts(ports []verdict.Port) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Quote(p.String())
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// A setting added to the language but not to reference.hcl would go
// undocumented; the raw structs' tags are the list of settings.
func TestReferenceMentionsEverySetting(t *testing.T) {
	src, err := os.ReadFile("../contrib/examples/reference.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []any{rawGate{}, rawMetrics{}, rawPenalty{}, rawDoor{}, rawSPA{}, rawTOTP{}} {
		ty := reflect.TypeOf(v)
		for i := range ty.NumField() {
			name, kind, _ := strings.Cut(ty.Field(i).Tag.Get("hcl"), ",")
			// Optional settings with no default appear commented out.
			after := `\s*=`
			if kind == "block" {
				after = `\s*\{`
			}
			re := regexp.MustCompile(`(?m)^\s*(#\s*)?` + regexp.QuoteMeta(name) + after)
			if !re.Match(src) {
				t.Errorf("reference.hcl does not show %s", name)
			}
		}
	}
}
