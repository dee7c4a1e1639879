# Doors opened by Single Packet Authorization (SPA) instead of knocks: one
# encrypted, HMAC-signed UDP datagram, as the stock fwknop client (2.6.x),
# its Android and iOS ports, and `knockgate spa` send it. A port scan, or
# anyone replaying a sniffed packet, sees nothing: SPA packets are dropped
# and never answered, each is accepted once, and only its key holder can
# make a new one.
#
# THE KEYS BELOW ARE PUBLISHED PLACEHOLDERS (they decode to "EXAMPLE-..."):
# make your own with
#   knockgate keygen --server gw.example.net --access tcp/22,tcp/443
# which prints the keys, this block filled in, and a ~/.fwknoprc stanza for
# the client. Better still, keep keys out of the policy with keys_file.
#
# The steering rules printed by `knockgate rules` already queue the SPA
# port (every new UDP flow to the gateway is queued). Then, from a client:
#   fwknop -A tcp/22 -a <your address> -D gw.example.net --use-hmac \
#     --key-base64-rijndael <KEY_BASE64> --key-base64-hmac <HMAC_KEY_BASE64>
#   knockgate spa --door nas --config /etc/knockgate/policy.hcl gw.example.net
# and within open_for connect to tcp/22 as usual.

door "nas" {
  spa {
    # fwknop's default port. Dropped and never answered.
    port = "udp/62201"

    # KEY_BASE64 and HMAC_KEY_BASE64, as `knockgate keygen` and
    # `fwknop --key-gen` print them. The HMAC is mandatory. Instead of
    # these two lines: keys_file = "/etc/knockgate/nas.keys", a file (mode
    # 0600) holding keygen's output; relative paths start from this file's
    # directory.
    # THESE KEYS ARE PUBLIC: anyone can read them here. Replace both with
    # your own (knockgate keygen) and delete allow_published_keys, without
    # which knockgate refuses them: with it, it warns at every start.
    key_base64           = "RVhBTVBMRS1LRVktdXNlLWtub2NrZ2F0ZS1rZXlnZW4="
    hmac_key_base64      = "RVhBTVBMRS1ITUFDLUtFWS1wdWJsaXNoZWQtaW4tZG9jcy1yZXBsYWNlLXdpdGgta25vY2tnYXRlLWtleWdlbg=="
    allow_published_keys = true

    # Must match the client's --hmac-digest-type and --encryption-mode
    # (HMAC_DIGEST_TYPE, ENCRYPTION_MODE in .fwknoprc); these are fwknop's
    # defaults.
    hmac_digest     = "sha256"
    encryption_mode = "cbc"

    # A packet whose timestamp is further than this from the gateway's clock,
    # either way, is refused (fwknop's default). Keep clocks in sync (NTP).
    max_age = "120s"

    # fwknop -f N (or knockgate spa --timeout) asks for a grant of N seconds;
    # it gets at most this. Without it, at most open_for.
    max_open_for = "5m"

    # The allow IP inside the packet must be the address the packet comes
    # from. Behind NAT the client must therefore put its public address in
    # (fwknop -R, or ALLOW_IP resolve). fwknop -s (0.0.0.0, "whatever my
    # source is") is refused unless this is true, because then whoever
    # sniffs the packet could use it first from elsewhere.
    allow_any_source = false
  }

  # The most a packet may ask for. A grant covers exactly the ports the
  # packet asked for (fwknop -A tcp/22 opens tcp/22, not tcp/443), for the
  # source that sent it; a packet asking for any other port is refused.
  open     = ["tcp/22", "tcp/443"]
  open_for = "30s"
}

# A second door on the same SPA port, with other keys: the HMAC tells the
# doors apart, so each key holder opens only their own door. This one may
# send only from the office network.
door "office-web" {
  spa {
    port = "udp/62201"
    # Public keys too: replace them, and delete allow_published_keys.
    key_base64           = "RVhBTVBMRS1LRVktMi11c2Uta25vY2tnYXRlLWtleWc="
    hmac_key_base64      = "RVhBTVBMRS1ITUFDLUtFWS0yLXB1Ymxpc2hlZC1pbi1kb2NzLXJlcGxhY2Utd2l0aC1rbm9ja2dhdGUta2V5Zw=="
    allow_published_keys = true
  }
  allow_from = ["198.51.100.0/24", "2001:db8:1::/48"]
  open       = ["tcp/8080"]
  open_for   = "1m"
}
