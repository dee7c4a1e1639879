# The sample policy behind rules.failopen.v4 and rules.failopen.v6. The gate
# fails open: while knockgate is not running, or its queue overflows, the
# gateway's public services (a web server on tcp/80 and tcp/443, say, which
# no door names) stay reachable, and the ports the doors open stay shut.
#
# A cmd/knockgate test regenerates both files from this policy and fails if
# they differ.
gate {
  fail_open = true
  # The default mark, set on every packet the gate accepts; the rules drop
  # new connections to protected ports without it.
  accept_mark = "0x4b470000/0xffff0000"
}

door "ssh" {
  sequence = ["tcp/7000", "udp/8000", "tcp/9000"]
  open     = ["tcp/22"]
}

# gw:2222 is forwarded to a LAN host by the static DNAT in the rules.
door "lan-ssh" {
  sequence = ["udp/41001", "tcp/41002", "udp/41003"]
  open     = ["tcp/2222"]
}

door "vpn" {
  sequence = ["tcp/41101", "udp/41102"]
  open     = ["udp/1194"]
}
