package rules

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

func tcp(n uint16) verdict.Port { return verdict.Port{Proto: verdict.TCP, Num: n} }
func udp(n uint16) verdict.Port { return verdict.Port{Proto: verdict.UDP, Num: n} }

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want Policy
	}{
		{
			name: "empty file",
			src:  "",
			want: Policy{Policy: verdict.Policy{
				Unprotected: verdict.Accept,
				MaxSources:  verdict.DefaultMaxSources,
				MaxGrants:   verdict.DefaultMaxGrants,
			}},
		},
		{
			name: "door alone takes every default",
			src: `
door "ssh" {
  sequence = ["tcp/7000", "udp/8000", "tcp/9000"]
  open     = ["tcp/22"]
}`,
			want: Policy{Policy: verdict.Policy{
				Doors: []verdict.Door{{
					Name:            "ssh",
					Sequence:        []verdict.Port{tcp(7000), udp(8000), tcp(9000)},
					SequenceTimeout: 10 * time.Second,
					Open:            []verdict.Port{tcp(22)},
					OpenFor:         30 * time.Second,
				}},
				Unprotected: verdict.Accept,
				MaxSources:  verdict.DefaultMaxSources,
				MaxGrants:   verdict.DefaultMaxGrants,
			}},
		},
		{
			name: "every setting",
			src: `
gate {
  queue       = 65534
  queues      = 2
  unprotected = "drop"
  max_sources = 1
  max_grants  = 10000000
  max_replay  = 7
  fail_open      = true
  accept_mark    = "0x100/0xf00"
  state_file     = "/var/lib/kg/../kg/grants.json"
  control_socket = "/run/kg.sock"
}
metrics {
  listen = "[::1]:9000"
}
door "ssh" {
  sequence         = ["tcp/7000", "UDP/8000", "tcp/7000"]
  sequence_timeout = "1m30s"
  open             = ["tcp/22", "udp/60001"]
  open_for         = "500ms"
  close_sequence   = ["tcp/9100", "tcp/9200"]
  allow_from       = ["198.51.100.7/24", "2001:db8::1/32", "::ffff:192.0.2.0/120", "::ffff:0:0/96", "::ffff:0:0/80"]
}
door "web" {
  sequence = ["udp/1"]
  open     = ["tcp/443", "tcp/22"]
}`,
			want: Policy{
				Queue:         65534,
				Queues:        2,
				FailOpen:      true,
				AcceptMark:    0x100,
				AcceptMask:    0xf00,
				StateFile:     "/var/lib/kg/grants.json",
				ControlSocket: "/run/kg.sock",
				MetricsListen: "[::1]:9000",
				Policy: verdict.Policy{
					Doors: []verdict.Door{{
						Name:            "ssh",
						Sequence:        []verdict.Port{tcp(7000), udp(8000), tcp(7000)},
						SequenceTimeout: 90 * time.Second,
						CloseSequence:   []verdict.Port{tcp(9100), tcp(9200)},
						Open:            []verdict.Port{tcp(22), udp(60001)},
						OpenFor:         500 * time.Millisecond,
						AllowFrom: []netip.Prefix{
							netip.MustParsePrefix("198.51.100.0/24"),
							netip.MustParsePrefix("2001:db8::/32"),
							// IPv4-mapped prefixes become plain IPv4.
							netip.MustParsePrefix("192.0.2.0/24"),
							netip.MustParsePrefix("0.0.0.0/0"),
							// Wider than ::ffff:0:0/96, it is kept as
							// IPv6 (and masked).
							netip.MustParsePrefix("::/80"),
						},
					}, {
						Name:            "web",
						Sequence:        []verdict.Port{udp(1)},
						SequenceTimeout: 10 * time.Second,
						Open:            []verdict.Port{tcp(443), tcp(22)},
						OpenFor:         30 * time.Second,
					}},
					Unprotected: verdict.Drop,
					MaxSources:  1,
					MaxGrants:   10_000_000,
					MaxReplay:   7,
				},
			},
		},
		{
			name: "null and empty optional settings mean unset",
			src: `
gate {
  queue = null
}
door "ssh" {
  sequence       = ["tcp/7000"]
  open           = ["tcp/22"]
  open_for       = null
  close_sequence = []
  allow_from     = null
}`,
			want: Policy{Policy: verdict.Policy{
				Doors: []verdict.Door{{
					Name:            "ssh",
					Sequence:        []verdict.Port{tcp(7000)},
					SequenceTimeout: 10 * time.Second,
					Open:            []verdict.Port{tcp(22)},
					OpenFor:         30 * time.Second,
				}},
				Unprotected: verdict.Accept,
				MaxSources:  verdict.DefaultMaxSources,
				MaxGrants:   verdict.DefaultMaxGrants,
			}},
		},
		{
			name: "ports may recur past the first knock",
			// Only first knocks must be unique; two doors may also open the
			// same port, say for different networks. A knock may repeat the
			// one before it: the engine advances on it before it considers
			// a retransmitted SYN.
			src: `
door "a" {
  sequence       = ["tcp/1", "tcp/2", "tcp/2", "tcp/1"]
  close_sequence = ["tcp/3", "tcp/2"]
  open           = ["tcp/22"]
  allow_from     = ["10.0.0.0/8"]
}
door "b" {
  sequence = ["udp/1", "tcp/2", "tcp/3"]
  open     = ["tcp/22"]
}`,
			want: Policy{Policy: verdict.Policy{
				Doors: []verdict.Door{{
					Name:            "a",
					Sequence:        []verdict.Port{tcp(1), tcp(2), tcp(2), tcp(1)},
					SequenceTimeout: 10 * time.Second,
					CloseSequence:   []verdict.Port{tcp(3), tcp(2)},
					Open:            []verdict.Port{tcp(22)},
					OpenFor:         30 * time.Second,
					AllowFrom:       []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
				}, {
					Name:            "b",
					Sequence:        []verdict.Port{udp(1), tcp(2), tcp(3)},
					SequenceTimeout: 10 * time.Second,
					Open:            []verdict.Port{tcp(22)},
					OpenFor:         30 * time.Second,
				}},
				Unprotected: verdict.Accept,
				MaxSources:  verdict.DefaultMaxSources,
				MaxGrants:   verdict.DefaultMaxGrants,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.src), "t.hcl")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.want.File = "t.hcl"
			// Cases that do not set these expect the defaults.
			if tt.want.StateFile == "" {
				tt.want.StateFile = DefaultStateFile
			}
			if tt.want.ControlSocket == "" {
				tt.want.ControlSocket = DefaultControlSocket
			}
			if tt.want.MetricsListen == "" {
				tt.want.MetricsListen = DefaultMetricsListen
			}
			if tt.want.Queues == 0 {
				tt.want.Queues = DefaultQueues
			}
			if tt.want.AcceptMask == 0 {
				tt.want.AcceptMark, tt.want.AcceptMask = DefaultAcceptMark, DefaultAcceptMask
			}
			if tt.want.Penalty == (verdict.Penalty{}) {
				tt.want.Penalty = verdict.DefaultPenalty
			}
			if tt.want.MaxReplay == 0 {
				tt.want.MaxReplay = verdict.DefaultMaxReplay
			}
			got.named = nil // TestStateFileIsNoFileThePolicyNames
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Parse gave\n%+v\nwant\n%+v", *got, tt.want)
			}
			// Small caps keep the engine's up-front tables small.
			vp := got.Policy
			vp.MaxSources, vp.MaxGrants = 4, 4
			if _, err := verdict.NewEngine(vp, time.Unix(0, 0)); err != nil {
				t.Errorf("the engine refuses the policy: %v", err)
			}
		})
	}
}

// Fixed SPA keys for the table of TestParseErrors, which needs its policy
// text as constants: 32 bytes each, base64.
var (
	testEncKey  = base64.StdEncoding.EncodeToString([]byte("knockgate test encryption key 32"))
	testHMACKey = base64.StdEncoding.EncodeToString([]byte("knockgate test HMAC key, 32 byte"))
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		// want holds a prefix of each line of the error, in order:
		// position, summary and, where it matters, the start of the detail.
		want []string
	}{
		{
			name: "syntax",
			src:  "door \"ssh\" {\n  sequence = [\"tcp/1\"\n}\n",
			want: []string{"t.hcl:3:1: Missing item separator"},
		},
		{
			name: "unknown attribute and block",
			src: `
gate {
  port = 1
}
door "ssh" {
  sequence = ["tcp/1"]
  open     = ["tcp/22"]
  rule {}
}
listen {}
timeout = 3`,
			want: []string{
				`t.hcl:3:3: Unsupported argument; An argument named "port" is not expected here.`,
				`t.hcl:8:3: Unsupported block type; Blocks of type "rule" are not expected here.`,
				`t.hcl:10:1: Unsupported block type; Blocks of type "listen" are not expected here.`,
				`t.hcl:11:1: Unsupported argument; An argument named "timeout" is not expected here.`,
			},
		},
		{
			name: "wrong types",
			src: `
gate {
  queue       = "zero"
  unprotected = ["accept"]
}
door "ssh" {
  sequence = "tcp/1"
  open     = [22, ["tcp/22"]]
  open_for = 30
}`,
			want: []string{
				`t.hcl:3:17: queue is not a number; A whole number is required here, not string.`,
				`t.hcl:4:17: unprotected is not a string; A string is required here, not tuple.`,
				`t.hcl:7:14: door "ssh" sequence is not a list`,
				`t.hcl:8:15: invalid port "22" in door "ssh" open; "22" is not of the form proto/port`,
				`t.hcl:8:19: door "ssh" open element is not a string`,
				`t.hcl:9:14: invalid open_for "30" in door "ssh"; Durations are written as Go writes them`,
			},
		},
		{
			name: "bad ports point at the element",
			src: `
door "ssh" {
  sequence       = ["tcp/7000", "sctp/1", "tcp/0",
                    "udp/65536", "tcp/x", "tcp22"]
  open           = ["tcp/22", "udp/-1"]
  close_sequence = ["", "tcp/9"]
}`,
			want: []string{
				`t.hcl:3:33: invalid port "sctp/1" in door "ssh" sequence; "sctp/1": protocol "sctp" is neither tcp nor udp.`,
				`t.hcl:3:43: invalid port "tcp/0" in door "ssh" sequence; "tcp/0": port "0" is not a number from 1 to 65535.`,
				`t.hcl:4:21: invalid port "udp/65536" in door "ssh" sequence; "udp/65536": port "65536" is not a number from 1 to 65535.`,
				`t.hcl:4:34: invalid port "tcp/x" in door "ssh" sequence`,
				`t.hcl:4:43: invalid port "tcp22" in door "ssh" sequence`,
				`t.hcl:5:31: invalid port "udp/-1" in door "ssh" open`,
				`t.hcl:6:21: invalid port "" in door "ssh" close_sequence`,
			},
		},
		{
			name: "durations",
			src: `
door "ssh" {
  sequence         = ["tcp/1"]
  sequence_timeout = "0s"
  open             = ["tcp/22"]
  open_for         = "-5m"
}
door "web" {
  sequence         = ["tcp/2"]
  sequence_timeout = "ten seconds"
  open             = ["tcp/80"]
  open_for         = "1d"
}`,
			want: []string{
				`t.hcl:4:22: door "ssh" sequence_timeout "0s" is not positive`,
				`t.hcl:6:22: door "ssh" open_for "-5m" is not positive`,
				`t.hcl:10:22: invalid sequence_timeout "ten seconds" in door "web"`,
				`t.hcl:12:22: invalid open_for "1d" in door "web"; Durations are written as Go writes them, such as "30s", "5m" or "1h30m": time: unknown unit "d" in duration "1d".`,
			},
		},
		{
			// Each duration has an upper bound: "2562047h" (the most a
			// Go duration holds) would overflow the engine's deadlines.
			name: "durations too long",
			src: `
door "ssh" {
  sequence         = ["tcp/1"]
  sequence_timeout = "1h0m1s"
  open             = ["tcp/22"]
  open_for         = "2562047h"
  spa {
    key_base64      = "` + testEncKey + `"
    hmac_key_base64 = "` + testHMACKey + `"
    max_age         = "2562047h"
    max_open_for    = "169h"
  }
}
door "totp" {
  open     = ["tcp/23"]
  open_for = "168h"
  totp {
    secret_base64 = "` + secret + `"
    step          = "2h"
    ports         = "udp/40000-40999"
  }
}
penalty {
  within = "25h"
  ban    = "2562047h"
}`,
			want: []string{
				`t.hcl:4:22: door "ssh" sequence_timeout "1h0m1s" is above 1h; A knock client sends its knocks within seconds`,
				`t.hcl:6:22: door "ssh" open_for "2562047h" is above 168h (7 days); A grant is a window to start connections in`,
				`t.hcl:10:23: door "ssh" max_age "2562047h" is above 1h;`,
				`t.hcl:11:23: door "ssh" max_open_for "169h" is above 168h (7 days);`,
				`t.hcl:19:21: door "totp" step "2h" is above 1h;`,
				`t.hcl:24:12: penalty within "25h" is above 24h;`,
				`t.hcl:25:12: penalty ban "2562047h" is above 720h (30 days);`,
			},
		},
		{
			name: "duplicate door names",
			src: `
door "ssh" {
  sequence = ["tcp/1"]
  open     = ["tcp/22"]
}
door "ssh" {
  sequence = ["tcp/2"]
  open     = ["tcp/2222"]
}`,
			want: []string{
				`t.hcl:6:6: duplicate door name "ssh"; The first door "ssh" is at t.hcl:2:6.`,
			},
		},
		{
			name: "knock port also protected",
			src: `
door "ssh" {
  sequence       = ["tcp/7000", "tcp/443"]
  close_sequence = ["udp/9", "tcp/22"]
  open           = ["tcp/22"]
}
door "web" {
  sequence = ["tcp/7001"]
  open     = ["tcp/443", "tcp/7001"]
}`,
			want: []string{
				`t.hcl:5:21: tcp/22 is both a knock and a protected port; Here door "ssh" opens it, but door "ssh" close_sequence knocks on it at t.hcl:4:30.`,
				`t.hcl:9:15: tcp/443 is both a knock and a protected port; Here door "web" opens it, but door "ssh" sequence knocks on it at t.hcl:3:33.`,
				`t.hcl:9:26: tcp/7001 is both a knock and a protected port; Here door "web" opens it, but door "web" sequence knocks on it at t.hcl:8:15.`,
			},
		},
		{
			name: "empty or missing lists",
			src: `
door "a" {
  sequence = []
  open     = []
}
door "b" {
}
door "c" {
  sequence = null
  open     = ["tcp/22"]
}`,
			want: []string{
				`t.hcl:3:14: door "a" has an empty sequence`,
				`t.hcl:4:14: door "a" has an empty open list`,
				`t.hcl:6:1: door "b" has no sequence`,
				`t.hcl:6:1: door "b" has no open list`,
				`t.hcl:8:1: door "c" has no sequence`,
			},
		},
		{
			name: "invalid CIDRs",
			src: `
door "ssh" {
  sequence   = ["tcp/1"]
  open       = ["tcp/22"]
  allow_from = ["10.0.0.0/8", "10.0.0.0/33", "198.51.100.7", "example.com/24", "2001:db8::/129"]
}
door "web" {
  sequence   = ["tcp/2"]
  open       = ["tcp/80"]
  allow_from = []
}`,
			want: []string{
				`t.hcl:5:31: invalid CIDR "10.0.0.0/33" in door "ssh" allow_from`,
				`t.hcl:5:46: invalid CIDR "198.51.100.7" in door "ssh" allow_from; A network needs a prefix length; for the one address write "198.51.100.7/32".`,
				`t.hcl:5:62: invalid CIDR "example.com/24" in door "ssh" allow_from`,
				`t.hcl:5:80: invalid CIDR "2001:db8::/129" in door "ssh" allow_from`,
				`t.hcl:10:16: door "web" allow_from is empty; Leave allow_from out to let anyone knock`,
			},
		},
		{
			name: "same port twice in open",
			src: `
door "ssh" {
  sequence = ["tcp/1"]
  open     = ["tcp/22", "udp/22", "tcp/22"]
}`,
			want: []string{
				`t.hcl:4:35: door "ssh" opens tcp/22 twice; It is already listed at t.hcl:4:15.`,
			},
		},
		{
			name: "first knocks must be unique",
			src: `
door "ssh" {
  sequence       = ["tcp/7000", "tcp/7001"]
  close_sequence = ["tcp/7000", "tcp/7002"]
  open           = ["tcp/22"]
}
door "web" {
  close_sequence = ["udp/9", "tcp/1"]
  sequence       = ["tcp/7000", "udp/9"]
  open           = ["tcp/443"]
}
door "mail" {
  sequence = ["udp/9"]
  open     = ["tcp/25"]
}`,
			want: []string{
				`t.hcl:4:21: door "ssh" close_sequence starts with tcp/7000, as door "ssh" sequence does; Door "ssh" sequence already starts with tcp/7000 at t.hcl:3:21.`,
				`t.hcl:9:21: door "web" sequence starts with tcp/7000, as door "ssh" sequence does`,
				`t.hcl:13:15: door "mail" sequence starts with udp/9, as door "web" close_sequence does; Door "web" close_sequence already starts with udp/9 at t.hcl:8:21.`,
			},
		},
		{
			name: "close sequence equal to sequence",
			src: `
door "ssh" {
  sequence       = ["tcp/7000", "tcp/7001"]
  close_sequence = ["tcp/7000", "tcp/7001"]
  open           = ["tcp/22"]
}`,
			want: []string{
				`t.hcl:4:20: door "ssh" close_sequence is the same as its sequence`,
			},
		},
		{
			name: "gate settings",
			src: `
gate {
  queue       = 65536
  unprotected = "reject"
  max_sources = 0
  max_grants  = 10000001
}
gate {
  queue = 1.5
}`,
			want: []string{
				`t.hcl:3:17: queue 65536 is out of range; NFQUEUE numbers run from 0 to 65535`,
				`t.hcl:4:17: invalid unprotected "reject"`,
				`t.hcl:5:17: max_sources 0 is out of range`,
				`t.hcl:6:17: max_grants 10000001 is out of range; The engine allocates its table for this many entries when it starts, some 100 to 200 bytes each; it must be from 1 to 10000000.`,
				`t.hcl:8:1: duplicate gate block; The first gate block is at t.hcl:2:1`,
			},
		},
		{
			name: "numbers",
			// A number is quoted as written, cut short: formatting one as
			// big as HCL allows could take seconds.
			src: `
gate {
  queue       = 1.5
  max_sources = 12345678901234567890123456789012345678901234567890
}`,
			want: []string{
				`t.hcl:3:17: queue 1.5 is not a whole number; NFQUEUE numbers run from 0 to 65535`,
				`t.hcl:4:17: max_sources 1234567890123456789012345678901234567890... is out of range`,
			},
		},
		{
			name: "queues",
			src: `
gate {
  queue  = 65535
  queues = 2
}
door "a" {
  sequence = ["tcp/1"]
  open     = ["tcp/22"]
}`,
			want: []string{
				`t.hcl:4:12: queues 2 from queue 65535 runs past queue 65535; NFQUEUE numbers run from 0 to 65535, as iptables' --queue-balance takes them.`,
			},
		},
		{
			name: "queues out of range",
			src: `
gate {
  queues = 0
}
door "a" {
  sequence = ["tcp/1"]
  open     = ["tcp/22"]
}`,
			want: []string{
				`t.hcl:3:12: queues 0 is out of range; The gate reads each queue on a thread of its own; from 1 to 64, about one per core.`,
			},
		},
		{
			name: "paths and metrics",
			src: `
gate {
  state_file     = "state.json"
  control_socket = ""
  fail_open      = "yes"
  accept_mark    = "0x1/0x2"
}
metrics {
  listen = "127.0.0.1"
}
metrics {
  listen = "[::1]:0"
}`,
			want: []string{
				`t.hcl:3:20: invalid state_file "state.json": want an absolute path`,
				`t.hcl:4:20: invalid control_socket "": want an absolute path`,
				`t.hcl:5:20: fail_open is not a bool`,
				`t.hcl:6:20: invalid accept_mark "0x1/0x2"`,
				`t.hcl:9:12: invalid metrics listen address "127.0.0.1"`,
				`t.hcl:11:1: duplicate metrics block; The first metrics block is at t.hcl:8:1`,
			},
		},
		{
			name: "variables and functions",
			src: `
door "ssh" {
  sequence = [var.knock]
  open     = [lower("TCP/22")]
}`,
			want: []string{
				`t.hcl:3:15: Variables not allowed`,
				`t.hcl:4:15: Function calls not allowed`,
			},
		},
		{
			name: "door labels",
			src: `
door {
  sequence = ["tcp/1"]
  open     = ["tcp/22"]
}
door "" {
  sequence = ["tcp/2"]
  open     = ["tcp/23"]
}
door "a" "b" {
  sequence = ["tcp/3"]
  open     = ["tcp/24"]
}`,
			want: []string{
				`t.hcl:2:6: Missing name for door`,
				`t.hcl:6:6: door name is empty`,
				`t.hcl:10:10: Extraneous label for door`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.src), "t.hcl")
			if p != nil {
				t.Errorf("Parse gave a policy: %+v", p)
			}
			wantDiags(t, err, tt.want)
		})
	}
}

// The engine counts a source's progress in 16 bits.
func TestParseLongSequence(t *testing.T) {
	for _, n := range []int{65535, 65536} {
		var b strings.Builder
		b.WriteString("door \"long\" {\n  open = [\"tcp/22\"]\n  sequence = [")
		for i := range n {
			fmt.Fprintf(&b, "\"tcp/%d\",", 1+i%2)
		}
		b.WriteString("]\n}\n")
		_, err := Parse([]byte(b.String()), "t.hcl")
		switch {
		case n <= 65535 && err != nil:
			t.Errorf("%d knocks: %v", n, err)
		case n > 65535 && (err == nil || !strings.HasPrefix(err.Error(), `t.hcl:3:14: door "long" sequence has 65536 knocks`)):
			t.Errorf("%d knocks gave %v", n, err)
		}
	}
}

// A grant records the ports it covers in a 64-bit mask; a door opening more
// would pass validate and then stop the daemon at start.
func TestParseManyOpenPorts(t *testing.T) {
	for _, n := range []int{verdict.MaxOpenPorts, verdict.MaxOpenPorts + 1} {
		var b strings.Builder
		b.WriteString("door \"many\" {\n  sequence = [\"udp/1\"]\n  open = [")
		for i := range n {
			fmt.Fprintf(&b, "\"tcp/%d\",", 100+i)
		}
		b.WriteString("]\n}\n")
		p, err := Parse([]byte(b.String()), "t.hcl")
		switch {
		case n <= verdict.MaxOpenPorts && err != nil:
			t.Errorf("%d ports: %v", n, err)
		case n <= verdict.MaxOpenPorts:
			if _, err := verdict.NewEngine(p.Policy, time.Unix(0, 0)); err != nil {
				t.Errorf("%d ports: the engine refuses the policy: %v", n, err)
			}
		case err == nil || !strings.HasPrefix(err.Error(), `t.hcl:3:10: door "many" opens 65 ports`):
			t.Errorf("%d ports gave %v", n, err)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	_, err := Load(filepath.Join(dir, "missing.hcl"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file gave %v, want fs.ErrNotExist", err)
	}
	var perr *Error
	if errors.As(err, &perr) {
		t.Errorf("Load of a missing file gave an *Error: %v", err)
	}
	if err != nil && !strings.HasPrefix(err.Error(), "failed to read policy ") {
		t.Errorf("Load of a missing file gave %q", err)
	}

	good := filepath.Join(dir, "good.hcl")
	if err := os.WriteFile(good, []byte("door \"ssh\" {\n  sequence = [\"tcp/1\"]\n  open = [\"tcp/22\"]\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(good)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if p.File != good || len(p.Doors) != 1 {
		t.Errorf("Load gave File %q and %d doors, want %q and 1", p.File, len(p.Doors), good)
	}

	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte("door \"ssh\" {\n  sequence = [\"tcp/1\"]\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if !errors.As(err, &perr) || !strings.HasPrefix(err.Error(), bad+":1:1: ") {
		t.Errorf("Load of an invalid file gave %v, want an *Error at %s:1:1", err, bad)
	}
}

// wantDiags checks that err is an *Error whose lines start, in order, with
// the prefixes in want: position, summary and, where it matters, detail.
func wantDiags(t *testing.T, err error, want []string) {
	t.Helper()
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("Parse = %v, want *Error", err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) || len(perr.Diags) != len(want) {
		t.Fatalf("got %d diagnostics, want %d:\n%v", len(perr.Diags), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("diagnostic %d:\ngot  %s\nwant %s...", i, lines[i], w)
		}
	}
}

// CheckSyntax refuses only what HCL cannot parse, with its position; a file
// that parses but is no valid policy passes it.
func TestCheckSyntax(t *testing.T) {
	if err := CheckSyntax([]byte("door \"ssh\" {\n  open = [\"tcp/99999\"]\n}\n"), "p.hcl"); err != nil {
		t.Errorf("an invalid policy with valid syntax: %v", err)
	}
	err := CheckSyntax([]byte("door \"ssh\" {\n  open = = [\"tcp/22\"]\n}\n"), "p.hcl")
	var perr *Error
	if !errors.As(err, &perr) || !strings.HasPrefix(err.Error(), "p.hcl:2:10: ") {
		t.Errorf("CheckSyntax of a stray = gave %v, want an *Error at p.hcl:2:10", err)
	}
}

// A 0-byte policy, or one with settings but no door, loads (it is what
// the daemon must be able to refuse on reload, not a parse error), and
// Warnings says it has no door; a policy with a door has no warning.
func TestNoDoorIsWarned(t *testing.T) {
	dir := t.TempDir()
	for name, src := range map[string]string{
		"empty.hcl":     "",
		"gate-only.hcl": "gate {\n  unprotected = \"drop\"\n}\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		p, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ws := p.Warnings()
		if len(p.Doors) != 0 || len(ws) != 1 || !errors.Is(ws[0], ErrNoDoor) || !strings.HasPrefix(ws[0].Error(), path+": the policy has no door") {
			t.Errorf("%s: %d doors, warnings %v; want none and ErrNoDoor naming the file", name, len(p.Doors), ws)
		}
	}
	p, err := Parse([]byte("door \"ssh\" {\n  sequence = [\"tcp/1\"]\n  open = [\"tcp/22\"]\n}\n"), "p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if ws := p.Warnings(); len(ws) != 0 {
		t.Errorf("a policy with a door: warnings %v", ws)
	}
}
