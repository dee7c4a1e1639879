# A gateway that forwards a port to a host on its LAN, with the forward
# behind a door. The NAT table has a static rule such as
#   iptables -t nat -A PREROUTING -i wan0 -p tcp --dport 2222 \
#     -j DNAT --to-destination 192.168.1.10:22
# and packets are queued from the mangle table's PREROUTING chain, which
# runs before nat's PREROUTING. The engine therefore sees the pre-DNAT
# destination, the gateway's own tcp/2222, and that is the port the door
# must open, not the LAN host's tcp/22. (Queue from FORWARD instead and the
# engine would see 192.168.1.10:22 after the rewrite.)
#
#   iptables -t mangle -A PREROUTING -i wan0 -m conntrack --ctstate NEW \
#     -j NFQUEUE --queue-num 0

gate {
  queue = 0
  # Only the doors' ports are queued from wan0 here, so this only decides
  # what happens to queued packets no door names.
  unprotected = "drop"
}

door "lan-ssh" {
  sequence         = ["udp/41001", "tcp/41002", "udp/41003"]
  sequence_timeout = "5s"
  open             = ["tcp/2222"]
  open_for         = "20s"
  close_sequence   = ["udp/41010", "udp/41011"]
}
