package rules

import "github.com/hashicorp/hcl/v2"

// fileSchema is decoded by hand rather than with gohcl because gohcl keeps
// no block label ranges, and a duplicate door name is best pointed at by its
// label.
var fileSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "gate"},
		{Type: "metrics"},
		{Type: "penalty"},
		{Type: "cluster"},
		{Type: "door", LabelNames: []string{"name"}},
	},
}

// rawGate and rawDoor hold attributes rather than decoded values: the checks
// point at the offending value, and for a list at the offending element,
// which a decoded []string could no longer tell apart. Every field is
// optional to gohcl so that a missing sequence or open gets a message naming
// the door instead of gohcl's generic one.
type rawGate struct {
	Queue       *hcl.Attribute `hcl:"queue,optional"`
	Queues      *hcl.Attribute `hcl:"queues,optional"`
	Unprotected *hcl.Attribute `hcl:"unprotected,optional"`
	MaxSources  *hcl.Attribute `hcl:"max_sources,optional"`
	MaxGrants   *hcl.Attribute `hcl:"max_grants,optional"`
	MaxReplay   *hcl.Attribute `hcl:"max_replay,optional"`
	FailOpen    *hcl.Attribute `hcl:"fail_open,optional"`
	AcceptMark  *hcl.Attribute `hcl:"accept_mark,optional"`
	StateFile   *hcl.Attribute `hcl:"state_file,optional"`
	Control     *hcl.Attribute `hcl:"control_socket,optional"`
}

type rawPenalty struct {
	Failures   *hcl.Attribute `hcl:"failures,optional"`
	Within     *hcl.Attribute `hcl:"within,optional"`
	Ban        *hcl.Attribute `hcl:"ban,optional"`
	MaxSources *hcl.Attribute `hcl:"max_sources,optional"`
}

type rawMetrics struct {
	Listen *hcl.Attribute `hcl:"listen,optional"`
}

type rawDoor struct {
	Sequence        *hcl.Attribute `hcl:"sequence,optional"`
	SequenceTimeout *hcl.Attribute `hcl:"sequence_timeout,optional"`
	Open            *hcl.Attribute `hcl:"open,optional"`
	OpenFor         *hcl.Attribute `hcl:"open_for,optional"`
	CloseSequence   *hcl.Attribute `hcl:"close_sequence,optional"`
	AllowFrom       *hcl.Attribute `hcl:"allow_from,optional"`
	MaxConnections  *hcl.Attribute `hcl:"max_connections,optional"`
	// TOTP and SPA are decoded in two steps (totpBlock, spaBlock), which
	// look up the blocks' own ranges (nestedRange).
	TOTP *struct {
		Body hcl.Body `hcl:",remain"`
	} `hcl:"totp,block"`
	SPA *struct {
		Body hcl.Body `hcl:",remain"`
	} `hcl:"spa,block"`
}

type rawSPA struct {
	Port           *hcl.Attribute `hcl:"port,optional"`
	KeyBase64      *hcl.Attribute `hcl:"key_base64,optional"`
	HMACKeyBase64  *hcl.Attribute `hcl:"hmac_key_base64,optional"`
	KeysFile       *hcl.Attribute `hcl:"keys_file,optional"`
	HMACDigest     *hcl.Attribute `hcl:"hmac_digest,optional"`
	Mode           *hcl.Attribute `hcl:"encryption_mode,optional"`
	MaxAge         *hcl.Attribute `hcl:"max_age,optional"`
	MaxOpenFor     *hcl.Attribute `hcl:"max_open_for,optional"`
	AllowAnySource *hcl.Attribute `hcl:"allow_any_source,optional"`
}

type rawTOTP struct {
	SecretBase64 *hcl.Attribute `hcl:"secret_base64,optional"`
	SecretFile   *hcl.Attribute `hcl:"secret_file,optional"`
	Step         *hcl.Attribute `hcl:"step,optional"`
	Length       *hcl.Attribute `hcl:"length,optional"`
	Ports        *hcl.Attribute `hcl:"ports,optional"`
}
