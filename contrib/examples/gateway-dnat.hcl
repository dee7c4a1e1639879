# A gateway that forwards a port to a host on its LAN, with the forward
# behind a door. The steering rules, with the static DNAT, come from
#   knockgate rules --interface wan0 --dnat tcp/2222=192.0.2.10:22
# which prints, among the rest:
#   *mangle
#   -A PREROUTING -i wan0 -m addrtype --dst-type LOCAL -m conntrack --ctstate NEW -j KNOCKGATE
#   -A KNOCKGATE -p tcp -j NFQUEUE --queue-num 0
#   ...
#   *nat
#   -A PREROUTING -i wan0 -m addrtype --dst-type LOCAL -p tcp --dport 2222 -j DNAT --to-destination 192.0.2.10:22
# Packets are queued from mangle PREROUTING, which runs before nat
# PREROUTING, so the engine sees the pre-DNAT destination, the gateway's own
# tcp/2222: that is the port the door must open, not the LAN host's tcp/22.
# (Queued from FORWARD instead, the engine would see 192.0.2.10:22 after the
# rewrite.)

gate {
  queue = 0
  # Every new connection to the gateway arriving on wan0 is queued; this
  # closes everything no door names, so from the WAN the gateway offers
  # nothing but the door.
  unprotected = "drop"
}

door "lan-ssh" {
  sequence         = ["udp/41001", "tcp/41002", "udp/41003"]
  sequence_timeout = "5s"
  open             = ["tcp/2222"]
  open_for         = "20s"
  close_sequence   = ["udp/41010", "udp/41011"]
}
