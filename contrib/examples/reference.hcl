# Every setting knockgate reads, each set to its default where it has one.
# Tests parse this file, the commented-out spa and totp blocks included, and
# check the values still equal the defaults and that every setting the code
# reads is shown, so it cannot drift from the code.
#
# Ports are written proto/number: "tcp/22", "udp/8000". Durations are
# written as Go writes them: "500ms", "10s", "5m", "1h30m".

# The gate block is optional; leave out any setting to keep its default.
gate {
  # The NFQUEUE number the gate reads packets from, 0 to 65535. It must match
  # the --queue-num of the steering rules; `knockgate rules --config POLICY`
  # prints them with this number.
  queue = 0

  # How many queues the gate serves, numbered from queue up: with 2, queues
  # 0 and 1. The steering rule spreads new connections over them with
  # --queue-balance 0:1 (knockgate rules prints it), and the gate reads each
  # on a thread of its own, so it can use more than one core. A source's
  # state is shared whichever queue its packets arrive on. About one per
  # core; at most 64, and queue + queues - 1 at most 65535.
  queues = 1

  # The verdict for queued packets to a port that no door names (neither a
  # knock nor a protected port). "accept" (the default) leaves them to the
  # rest of the firewall; "drop" closes everything but the doors.
  unprotected = "accept"

  # The most sources that can have a knock sequence in progress at once. The
  # table is allocated at start and never grows, so a flood of knocks from
  # spoofed addresses costs CPU, never memory. From 1 to 10000000.
  max_sources = 100000

  # The most live grants (one per source and door) at once, allocated the
  # same way. From 1 to 10000000.
  max_grants = 10000

  # The most SPA packets remembered against replay. Each is kept only as
  # long as its timestamp could still pass its door's max_age, so the cache
  # holds about rate x window packets; the cap bounds memory even against a
  # flood of valid packets. From 1 to 10000000.
  max_replay = 100000

  # What happens while the daemon is not running or the queue overflows.
  # false (the default) fails closed: the steering rules have no
  # --queue-bypass, so every queued packet is dropped and nothing gets in,
  # protected or not. true fails open for the ports no door names: the
  # rules (`knockgate rules --config POLICY`) queue with --queue-bypass, the
  # gate marks what it accepts with accept_mark, and a static rule drops NEW
  # connections to the protected ports that lack the mark, so the doors stay
  # shut while public services keep working. Re-run `knockgate rules` when
  # you change which ports the doors open.
  fail_open = false

  # The mark (value/mask, as iptables writes it) the gate puts on packets it
  # accepts, in fail-open mode. Only the bits of the mask are touched; the
  # value must be non-zero and inside the mask. A value alone takes a mask
  # of all ones.
  accept_mark = "0x4b470000/0xffff0000"

  # Where grants are saved (an absolute path), so that a restart (a crash
  # included) keeps them and they still expire on time. Written atomically
  # (a temporary file, then a rename) whenever a grant opens or ends. A file
  # that cannot be read is reported and set aside as FILE.corrupt-TIME; the
  # daemon then starts with no grants, which fails closed. "" keeps grants
  # in memory only. systemd's StateDirectory=knockgate creates the
  # directory.
  state_file = "/var/lib/knockgate/state.json"

  # The Unix socket (an absolute path) that `knockgate status`,
  # `knockgate revoke` and `knockgate reload` talk to. Mode 0600, and the
  # daemon checks the caller's credentials: only root (or the daemon's own
  # user) is answered.
  control_socket = "/run/knockgate/knockgate.sock"
}

# The penalty box: a source that fails `failures` times within `within`
# (wrong knocks, knocks from outside allow_from, a TOTP sequence another
# source already used, bad or refused SPA packets) has its knocks and SPA
# packets ignored for `ban`. Grants it already holds keep working, and so do
# the ports no door names. Resets by ordinary traffic, timeouts and
# retransmits are not failures. Knocks can be sent from a spoofed address, so
# an attacker who knows a client's address could get it banned: set
# failures = 0 to turn the box off where that matters more than brute force.
penalty {
  failures = 10 # from 0 to 1000000
  within   = "1m"
  ban      = "10m"

  # The box's own table, allocated at start: a flood of failures from
  # spoofed sources evicts records of sources that are not banned first.
  # From 1 to 10000000.
  max_sources = 10000
}

# The Prometheus endpoint: /metrics, /-/healthy, and /-/ready (200 once the
# queue is bound). On by default on loopback, at a port outside the
# 9100-9999 range where exporters crowd; listen = "" turns it off.
metrics {
  listen = "127.0.0.1:8789"
}

# A door: a sequence of knocks that opens protected ports for the source
# that knocked. The label is the door's name; it labels log lines and
# metrics, so it must be unique.
door "ssh" {
  # The knocks, in order: at least one, at most 65535. Required unless the
  # door has a totp or an spa block. Knocks are dropped, so a port scan
  # learns nothing. Two rules the engine needs to be unambiguous:
  #  - no two sequences in the policy (sequence or close_sequence, in any
  #    door) may start with the same port, because the engine tells which
  #    sequence a source has begun by its first knock;
  #  - no port may be both a knock and a protected port (in any door's open).
  sequence = ["tcp/7000", "udp/8000", "tcp/9000"]

  # How long a source has from its first knock to its last. Above zero.
  sequence_timeout = "10s"

  # The protected ports this door opens, dropped for anyone without a grant.
  # Required, at least one and at most 64, each listed once. Two doors may
  # open the same port (say, with different allow_from).
  open = ["tcp/22"]

  # How long a grant lasts from the last knock (or the SPA packet). Above
  # zero. With the usual rule that queues only conntrack state NEW, only new
  # connections need a live grant: an accepted connection's later packets
  # are never queued.
  open_for = "30s"

  # A sequence that revokes the source's grant at once, instead of waiting
  # for open_for to run out. Optional; by default there is none. It must not
  # be the door's own sequence and, like any sequence, must start with a
  # port no other sequence starts with.
  # close_sequence = ["tcp/9100", "tcp/9200"]

  # The networks whose sources may knock or send SPA packets; a knock from
  # anywhere else is dropped, does not advance any sequence, and counts as a
  # failure for the penalty box. Optional; by default anyone may knock. An
  # empty list is refused rather than read as "anyone". Host bits are masked
  # off, so "198.51.100.7/24" means 198.51.100.0/24.
  # allow_from = ["198.51.100.0/24", "2001:db8::/32"]

  # Admit only this many new connections per grant, then close it: behind a
  # shared address (a hotel or carrier NAT), the window is gone the moment
  # the knocker uses it. Connections already open carry on. Optional; by
  # default a grant admits any number until open_for runs out. From 1 to
  # 1000000.
  # max_connections = 1

  # A rotating sequence instead of `sequence` (RFC 6238 style): the knocks
  # are derived from a shared secret and the time step, so a sequence sniffed
  # now is useless once its step and the next have passed. Knocks of the
  # current and the previous step are accepted; a sequence completed in a
  # step cannot be replayed by another source in that step. The whole port
  # range is reserved for the door (dropped, and no other rule may use a
  # port in it), so a derived knock never collides with anything.
  # `knockgate knock --door NAME` computes the sequence itself;
  # `knockgate sequence --door NAME` prints it for any stock knock client.
  # totp {
  #   # The shared secret, base64 of at least 16 bytes; `knockgate keygen
  #   # --kind totp` makes one. Either inline:
  #   secret_base64 = "..."
  #   # or, instead, from a file holding it (keygen's output will do;
  #   # relative paths: from the policy's directory):
  #   secret_file = "otp.secret"
  #   # A secret printed in knockgate's examples or docs is refused unless
  #   # this is true, and then warned about at every start: for a lab only.
  #   allow_published_keys = false
  #
  #   # How often the sequence changes: whole seconds, at least one. Every
  #   # client must use the same.
  #   step = "30s"
  #
  #   # Knocks in a sequence, from 1 to 64.
  #   length = 4
  #
  #   # Where the derived knocks fall, proto/first-last: at least 16 ports,
  #   # all reserved for this door. Required.
  #   ports = "udp/40000-40999"
  # }

  # Single Packet Authorization: the door also opens for one encrypted,
  # authenticated UDP packet from the stock fwknop client (2.6.x) or
  # `knockgate spa`. A door may have a sequence, an spa block, or both. See
  # contrib/examples/spa.hcl for a door with SPA alone.
  # spa {
  #   # Where SPA packets arrive: a UDP port, dropped and never answered.
  #   # Several doors may share one; the HMAC tells which door a packet is for.
  #   port = "udp/62201"
  #
  #   # The keys, as `knockgate keygen` or `fwknop --key-gen` print them.
  #   # HMAC is mandatory. Either inline:
  #   key_base64      = "..."
  #   hmac_key_base64 = "..."
  #   # or, instead of those two, from a file holding the KEY_BASE64: and
  #   # HMAC_KEY_BASE64: lines (relative paths: from the policy's directory):
  #   keys_file = "/etc/knockgate/ssh.keys"
  #   # Keys printed in knockgate's examples or docs are refused unless this
  #   # is true, and then warned about at every start: for a lab only. Keep
  #   # the policy or keys_file mode 0600: knockgate warns when group or
  #   # others may read it.
  #   allow_published_keys = false
  #
  #   # As the client's --hmac-digest-type (md5, sha1, sha256, sha384,
  #   # sha512, sha3_256, sha3_512) and --encryption-mode (cbc, ecb, cfb,
  #   # ofb, ctr, legacy).
  #   hmac_digest     = "sha256"
  #   encryption_mode = "cbc"
  #
  #   # How far a packet's timestamp may be from our clock, either way. Above
  #   # zero.
  #   max_age = "120s"
  #
  #   # A client-timeout message (fwknop -f) may ask for a grant up to this
  #   # long; by default, up to open_for.
  #   max_open_for = "5m"
  #
  #   # Let a packet open the door for an address other than its source,
  #   # including fwknop's -s (0.0.0.0). Off: a sniffed packet could then be
  #   # used first from elsewhere.
  #   allow_any_source = false
  # }
}

# Several gateways sharing grants, revokes, used SPA packets, TOTP use and
# bans (README, "Several gateways"). Leave the block out for one gateway.
# node, listen and the key take effect at a restart; peers at a reload.
# cluster {
#   # Unique per gateway; names each grant's origin. Default: the host name.
#   node = "gw1"
#   # IP:port where peers reach this gateway, TCP and UDP; not a knock, SPA
#   # or protected port.
#   listen = "192.0.2.1:7946"
#   # Any of the others (IP:port); joining one finds the rest.
#   peers = ["192.0.2.2:7946", "192.0.2.3:7946"]
#   # The key every gateway shares: knockgate keygen --kind cluster, mode
#   # 0600.
#   secret_file = "/etc/knockgate/cluster.key"
# }
