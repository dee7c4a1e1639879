# The smallest useful policy: one door, every other setting left to its
# default. Knock on tcp/7000, udp/8000 and tcp/9000 within 10s and tcp/22
# opens to your address for 30s, long enough to connect. Established
# connections are the firewall's business (conntrack), so the session
# outlives the grant.
door "ssh" {
  sequence = ["tcp/7000", "udp/8000", "tcp/9000"]
  open     = ["tcp/22"]
}
