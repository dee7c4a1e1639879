package rules

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/knockgate/knockgate/verdict"
)

var secret = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func TestTOTPAndPenaltyBlocks(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "otp.secret"), []byte("TOTP_SECRET_BASE64: "+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := `
penalty {
  failures    = 3
  within      = "30s"
  ban         = "1h"
  max_sources = 50
}
door "otp" {
  totp {
    secret_base64 = "` + secret + `"
    ports         = "udp/40000-40999"
  }
  open            = ["tcp/22"]
  max_connections = 1
}
door "otp2" {
  totp {
    secret_file = "otp.secret"
    step        = "60s"
    length      = 6
    ports       = "tcp/41000-41015"
  }
  open = ["tcp/23"]
}`
	p, err := Parse([]byte(src), filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Penalty != (verdict.Penalty{Failures: 3, Within: 30 * time.Second, Ban: time.Hour, MaxSources: 50}) {
		t.Errorf("penalty %+v", p.Penalty)
	}
	a, b := p.Doors[0], p.Doors[1]
	if a.TOTP == nil || a.TOTP.Step != DefaultTOTPStep || a.TOTP.Length != DefaultTOTPLength ||
		a.TOTP.Proto != verdict.UDP || a.TOTP.Lo != 40000 || a.TOTP.Hi != 40999 || a.MaxConnections != 1 || len(a.Sequence) != 0 {
		t.Errorf("otp: %+v %+v", a, a.TOTP)
	}
	if b.TOTP == nil || b.TOTP.Step != time.Minute || b.TOTP.Length != 6 || b.TOTP.Proto != verdict.TCP ||
		string(b.TOTP.Secret) != "0123456789abcdef0123456789abcdef" {
		t.Errorf("otp2: %+v", b.TOTP)
	}
	if _, err := verdict.NewEngine(p.Policy, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
}

func TestTOTPAndPenaltyBlockErrors(t *testing.T) {
	enc, mac := newKeys(t)
	tests := []struct {
		name, src string
		want      []string
	}{
		{"no secret", `door "d" {
  totp { ports = "udp/40000-40999" }
  open = ["tcp/22"]
}`, []string{`t.hcl:2:3: door "d" totp block has no secret`}},
		{"short secret and bad range", `door "d" {
  totp {
    secret_base64 = "c2hvcnQ="
    ports         = "udp/40000-40010"
    step          = "1500ms"
  }
  open = ["tcp/22"]
}`, []string{
			`t.hcl:3:21: invalid TOTP secret of door "d"`,
			`t.hcl:4:21: TOTP range "udp/40000-40010" of door "d" is too small`,
			`t.hcl:5:21: invalid TOTP step of door "d"`,
		}},
		{"sequence and totp", `door "d" {
  sequence = ["tcp/1"]
  totp {
    secret_base64 = "` + secret + `"
    ports         = "udp/40000-40999"
  }
  open = ["tcp/22"]
}`, []string{`t.hcl:2:3: door "d" has both a sequence and a totp block`}},
		{"range overlaps", `door "d" {
  totp {
    secret_base64 = "` + secret + `"
    ports         = "udp/40000-40999"
  }
  open = ["tcp/22", "udp/40500"]
}`, []string{`t.hcl:4:21: TOTP range of door "d" overlaps another rule; Door "d" open uses udp/40500 at t.hcl:6:21`}},
		{"secrets, ports and length", `door "d" {
  totp {
    secret_base64 = "` + secret + `"
    secret_file   = "otp.secret"
    ports         = "udp/40000-40999"
  }
  open = ["tcp/22"]
}
door "e" {
  totp {
    secret_base64 = "` + secret + `"
    ports         = "udp/40000"
    length        = 65
  }
  open = ["tcp/23"]
}
door "f" {
  totp {
    secret_base64 = "` + secret + `"
    ports         = "udp/41000-40999"
  }
  open = ["tcp/24"]
}`, []string{
			`t.hcl:4:5: door "d" has both secret_base64 and secret_file`,
			`t.hcl:12:21: invalid TOTP ports "udp/40000" of door "e"; "udp/40000" is not of the form proto/first-last`,
			`t.hcl:13:21: length 65 is out of range; A TOTP sequence has from 1 to 64 knocks`,
			`t.hcl:20:21: invalid TOTP ports "udp/41000-40999" of door "f"; "udp/41000-40999": the last port "40999" is not a port at or above the first`,
		}},
		{"ranges overlap a range and an spa port", `door "d" {
  totp {
    secret_base64 = "` + secret + `"
    ports         = "udp/40000-40999"
  }
  open = ["tcp/22"]
}
door "e" {
  totp {
    secret_base64 = "` + secret + `"
    ports         = "udp/40900-41999"
  }
  spa {
    port            = "udp/41500"
    key_base64      = "` + enc + `"
    hmac_key_base64 = "` + mac + `"
  }
  open = ["tcp/23"]
}`, []string{
			`t.hcl:4:21: TOTP range of door "d" overlaps another rule; Door "e"'s TOTP range overlaps it at t.hcl:11:21.`,
			`t.hcl:11:21: TOTP range of door "e" overlaps another rule; Door "d"'s TOTP range overlaps it at t.hcl:4:21.`,
			`t.hcl:11:21: TOTP range of door "e" overlaps another rule; Door "e" listens for SPA on udp/41500 at t.hcl:14:23.`,
		}},
		{"max_connections and penalty", `door "d" {
  sequence        = ["tcp/1"]
  open            = ["tcp/22"]
  max_connections = 0
}
penalty {
  failures = -1
  ban      = "0s"
}`, []string{
			`t.hcl:4:21: max_connections 0 is out of range`,
			`t.hcl:7:14: failures -1 is out of range`,
			`t.hcl:8:14: penalty ban "0s" is not positive`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), "t.hcl")
			wantDiags(t, err, tt.want)
		})
	}
}
