# /etc/knockgate/policy.hcl: the policy knockgate.service runs with. See
# knockgate.hcl(5), and /usr/share/doc/knockgate/examples/reference.hcl for
# every setting with its default.
#
# As installed it has no doors: it is valid, and opens nothing. The package
# neither enables nor starts the service. To put the gate in service:
#
#  1. Write your doors below. Choose your own knock ports (the examples'
#     ports are published) and make keys on this machine, never copy them:
#       (umask 077; knockgate keygen --server gw.example.net > /etc/knockgate/ssh.keys)
#       (umask 077; knockgate keygen --kind totp > /etc/knockgate/otp.secret)
#     Keep this file and the keys mode 0600, owned by root.
#  2. Check it:
#       knockgate validate --config /etc/knockgate/policy.hcl
#  3. Load the steering rules at boot, before the service starts, and keep
#     console access while you test: with fail-closed rules (the default)
#     every new connection to this host is dropped while the daemon is not
#     running.
#       knockgate rules --config /etc/knockgate/policy.hcl --interface wan0
#     prints them for iptables-restore and ip6tables-restore (merge them
#     into iptables-persistent's /etc/iptables/rules.v4 and rules.v6);
#     /usr/share/doc/knockgate/examples/ has iptables and nftables examples.
#  4. Start it, and at every boot:
#       systemctl enable --now knockgate
#
# A door opened by a knock sequence (replace each PORT with a port of your
# own; a knock port must not be a port you serve):
#
# door "ssh" {
#   sequence = ["tcp/PORT", "udp/PORT", "tcp/PORT"]
#   open     = ["tcp/22"]
#   open_for = "30s"
# }
#
# A door opened by one fwknop-compatible SPA packet, with the keys made in
# step 1 (keygen's output also holds the client's ~/.fwknoprc stanza):
#
# door "ssh-spa" {
#   spa {
#     port      = "udp/62201"
#     keys_file = "/etc/knockgate/ssh.keys"
#   }
#   open = ["tcp/22"]
# }
