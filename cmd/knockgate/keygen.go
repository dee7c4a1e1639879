package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/knockgate/knockgate/cluster"
	"github.com/knockgate/knockgate/verdict"
	spa "github.com/knockgate/knockgate/verdict/fwknop"
)

func cmdKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", "[--hmac-digest sha256] [--quiet] [--server HOST] [--port udp/62201] [--access tcp/22,...]",
		"Print a fresh SPA key pair in fwknop's format, the two lines that\n"+
			"`fwknop --key-gen` prints:\n\n"+
			"  KEY_BASE64: …       (32 random bytes: the encryption passphrase)\n"+
			"  HMAC_KEY_BASE64: …  (64 random bytes for sha256: the HMAC key)\n\n"+
			"Saved as they are (the whole output, comments included) they are a door's\n"+
			"keys_file. After them come, as # comments, a policy spa block and a\n"+
			"~/.fwknoprc stanza for the stock fwknop client with the same keys;\n"+
			"--server, --port and --access only fill in those two. Keys are secrets:\n"+
			"keep the file mode 0600 and move them to the client over a secure channel.\n\n"+
			"Examples:\n"+
			"  knockgate keygen --server gw.example.net --access tcp/22\n"+
			"  (umask 077; knockgate keygen --quiet > /etc/knockgate/nas.keys)\n\n"+
			"With --kind totp it prints a secret for a door's totp block instead, as\n"+
			"TOTP_SECRET_BASE64: … (32 random bytes), which is also a secret_file.\n\n"+
			"With --kind cluster it prints a cluster key (32 random bytes, base64, one\n"+
			"line): save it as every gateway's cluster secret_file.", stderr)
	kind := fs.String("kind", "spa", "`kind` of secret: spa (fwknop-compatible keys), totp (a secret for a door's totp block) or cluster (the key gateways of a cluster share)")
	digestName := fs.String("hmac-digest", "sha256", "HMAC `digest`: md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512; sets the HMAC key size as fwknop does")
	quiet := fs.Bool("quiet", false, "print only the KEY_BASE64 and HMAC_KEY_BASE64 lines")
	server := fs.String("server", "gw.example.net", "the gateway's `host` name or address, for the .fwknoprc stanza")
	portFlag := fs.String("port", "udp/62201", "the door's SPA `port`, for both snippets")
	var access portList
	fs.Var(&access, "access", "comma-separated `ports` to ask for, for the .fwknoprc stanza (default tcp/22)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch *kind {
	case "spa":
	case "totp":
		return totpKeygen(stdout, *quiet)
	case "cluster":
		_, err := stdout.Write(cluster.FormatKey(cluster.NewKey()))
		return err
	default:
		return fmt.Errorf("invalid --kind %q: want spa, totp or cluster", *kind)
	}
	digest, err := spa.ParseDigest(*digestName)
	if err != nil {
		return fmt.Errorf("invalid --hmac-digest: %w", err)
	}
	port, err := parseSPAPort(*portFlag)
	if err != nil {
		return fmt.Errorf("invalid --port: %w", err)
	}
	if len(access) == 0 {
		access = portList{{Proto: verdict.TCP, Num: 22}}
	}
	enc, mac, err := spa.GenerateKeysFor(rand.Reader, digest)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, spa.FormatKeys(enc, mac))
	if *quiet {
		return nil
	}
	fmt.Fprint(stdout, keygenSnippets(enc, mac, digest, port, *server, access))
	return nil
}

// keygenSnippets shows where the keys go, as comment lines so that the
// whole output still reads as a keys_file. The .fwknoprc names are the
// client's (fwknop(8), FWKNOPRC FILE); ALLOW_IP resolve makes the client
// learn its public address, which is what knockgate compares with the
// packet's source when the client sits behind NAT.
func keygenSnippets(enc, mac string, digest spa.Digest, port verdict.Port, server string, access portList) string {
	var b strings.Builder
	p := func(format string, args ...any) {
		b.WriteString(strings.TrimRight("# "+fmt.Sprintf(format, args...), " ") + "\n")
	}
	b.WriteString("\n")
	p("Keep the two lines above secret (mode 0600): either save this output as")
	p("the door's keys_file, or paste the keys into the door's spa block:")
	p("")
	p("  spa {")
	p("    port            = %q", port.String())
	p("    key_base64      = %q", enc)
	p("    hmac_key_base64 = %q", mac)
	p("    hmac_digest     = %q", digest.String())
	p("  }")
	p("")
	p("For the stock fwknop client, a ~/.fwknoprc stanza (fwknop -n knockgate):")
	p("")
	p("  [knockgate]")
	p("  SPA_SERVER          %s", server)
	p("  SPA_SERVER_PORT     %d", port.Num)
	p("  SPA_SERVER_PROTO    udp")
	p("  ACCESS              %s", access.String())
	p("  ALLOW_IP            resolve")
	p("  KEY_BASE64          %s", enc)
	p("  HMAC_KEY_BASE64     %s", mac)
	p("  USE_HMAC            Y")
	p("  HMAC_DIGEST_TYPE    %s", digest.String())
	p("")
	p("ALLOW_IP resolve asks a web service for your public address; without NAT")
	p("set your own address instead (ALLOW_IP 198.51.100.10). Or use our client:")
	p("  knockgate spa --door NAME --config POLICY %s", server)
	return b.String()
}

// parseSPAPort parses an SPA port, "udp/62201" or just "62201". SPA
// arrives over UDP only.
func parseSPAPort(s string) (verdict.Port, error) {
	if !strings.Contains(s, "/") {
		s = "udp/" + s
	}
	p, err := verdict.ParsePort(s)
	if err != nil {
		return verdict.Port{}, err
	}
	if p.Proto != verdict.UDP {
		return verdict.Port{}, fmt.Errorf("%q: SPA packets travel over udp only", s)
	}
	return p, nil
}

// portList is a flag of comma-separated proto/port values; it may be given
// more than once.
type portList []verdict.Port

func (l portList) String() string {
	parts := make([]string, len(l))
	for i, p := range l {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func (l *portList) Set(s string) error {
	for part := range strings.SplitSeq(s, ",") {
		p, err := verdict.ParsePort(strings.TrimSpace(part))
		if err != nil {
			return err
		}
		*l = append(*l, p)
	}
	return nil
}

// totpKeygen prints a TOTP secret: one line that is a secret_file as it
// stands, then the totp block that uses it, as comments.
func totpKeygen(stdout io.Writer, quiet bool) error {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("failed to read random bytes: %w", err)
	}
	secret := base64.StdEncoding.EncodeToString(b[:])
	fmt.Fprintf(stdout, "TOTP_SECRET_BASE64: %s\n", secret)
	if quiet {
		return nil
	}
	fmt.Fprintf(stdout, `#
# In the policy, inside a door (or secret_file = "FILE" with this output):
#   totp {
#     secret_base64 = %q
#     step          = "30s"
#     length        = 4
#     ports         = "udp/40000-40999"
#   }
# Clients with the same door block knock with
#   knockgate knock --door NAME --config POLICY HOST
# or print the current sequence for any knock client with
#   knockgate sequence --door NAME --config POLICY
`, secret)
	return nil
}
