package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/knockgate/knockgate/rules"
)

// fakeRuleset makes saveRuleset print a captured iptables-save file (the
// mangle rules of both families are the same text) for the test.
func fakeRuleset(t *testing.T, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../rules/testdata/check", name))
	if err != nil {
		t.Fatal(err)
	}
	old, oldNft := saveRuleset, listNft
	saveRuleset = func(bool) (string, error) { return string(b), nil }
	listNft = func() ([]byte, error) { return []byte(`{"nftables": []}`), nil }
	t.Cleanup(func() { saveRuleset, listNft = old, oldNft })
}

const checkDoor = "door \"ssh\" {\n  sequence = [\"udp/7000\", \"udp/7001\"]\n  open = [\"tcp/22\", \"tcp/1000\", \"tcp/1001\", \"tcp/1002\"]\n}\n"

func TestCheck(t *testing.T) {
	fakeRuleset(t, "failopen-ranges.v4")
	good := writePolicyFile(t, "gate {\n  fail_open = true\n}\n"+checkDoor)
	if code, out, errOut := runMain(t, "check", "--config", good); code != 0 || strings.Count(out, ": ok\n") != 2 {
		t.Fatalf("check of the loaded rules: exit %d\n%s%s", code, out, errOut)
	}
	moved := writePolicyFile(t, "gate {\n  fail_open = true\n  queue = 5\n}\n"+checkDoor)
	code, out, _ := runMain(t, "check", "--config", moved)
	for _, want := range []string{
		"missing: -A KNOCKGATE -p tcp -j NFQUEUE --queue-num 5 --queue-bypass",
		"stale:   -A KNOCKGATE -p tcp -j NFQUEUE --queue-num 0 --queue-bypass",
		"load them again with knockgate rules --config " + moved,
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("check of another queue: exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
	if code, out, _ := runMain(t, "check", "--config", good, "--interface", "eth0"); code != 1 || !strings.Contains(out, "missing: -A PREROUTING -i eth0") {
		t.Errorf("check for another interface: exit %d\n%s", code, out)
	}
}

// At start the daemon's command logs each missing rule as a warning.
func TestCheckAtStart(t *testing.T) {
	fakeRuleset(t, "none.v4")
	pol, err := rules.Parse([]byte(checkDoor), "p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	checkAtStart(slog.New(slog.NewTextHandler(&b, nil)), pol)
	if n := strings.Count(b.String(), "steering rule missing"); n != 6 {
		t.Fatalf("%d missing-rule warnings, want 3 per family:\n%s", n, b.String())
	}
	fakeRuleset(t, "failopen-ranges.v4")
	b.Reset()
	checkAtStart(slog.New(slog.NewTextHandler(&b, nil)), pol)
	if !strings.Contains(b.String(), "stale steering rule") {
		t.Fatalf("fail-open rules for a fail-closed policy: no stale warning:\n%s", b.String())
	}
}

func TestCheckNftFormat(t *testing.T) {
	b, err := os.ReadFile("../../rules/testdata/check/failopen-eth0.json")
	if err != nil {
		t.Fatal(err)
	}
	old := listNft
	listNft = func() ([]byte, error) { return b, nil }
	t.Cleanup(func() { listNft = old })
	policy := writePolicyFile(t, "gate {\n  fail_open = true\n  queue = 3\n  queues = 2\n}\n"+
		"door \"ssh\" {\n  sequence = [\"udp/7000\", \"udp/7001\"]\n  open = [\"tcp/22\", \"tcp/443\", \"udp/51820\"]\n}\n")
	if code, out, errOut := runMain(t, "check", "--format", "nft", "--config", policy, "--interface", "eth0"); code != 0 || !strings.Contains(out, "\nok\n") {
		t.Fatalf("check --format nft: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ := runMain(t, "check", "--format", "nft", "--config", policy); code != 1 || !strings.Contains(out, "missing: interface != lo") {
		t.Fatalf("check --format nft for another interface: exit %d\n%s", code, out)
	}
	// At start the nft table is what is checked, and it matches.
	pol, err := rules.Load(policy)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	checkAtStart(slog.New(slog.NewTextHandler(&logs, nil)), pol)
	if logs.Len() != 0 {
		t.Fatalf("start check of matching nft rules logged:\n%s", logs.String())
	}
}
