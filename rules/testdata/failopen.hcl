# A fail-open policy for the steering tests: rules/steer_test.go renders
# its rules, cmd/knockgate/rules_test.go prints them through the command.
gate {
  queue       = 5
  fail_open   = true
  accept_mark = "0x100/0x300"
}

door "ssh" {
  sequence = ["tcp/7000", "udp/8000", "tcp/9000"]
  open     = ["tcp/23", "tcp/22", "udp/51820"]
}

door "lan" {
  sequence = ["udp/6100"]
  open     = ["tcp/2222", "tcp/22", "tcp/2224", "tcp/2223"]
}
