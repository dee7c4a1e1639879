#!/usr/bin/env bash
# knockgate demo: a throwaway network-namespace lab that shows the gate
# working, step by step, and checks every outcome (so it doubles as a smoke
# test: the exit status is non-zero if any check fails).
#
#   sudo ./contrib/demo/demo.sh bin/knockgate      (or: sudo make demo)
#
# The lab, all in documentation address ranges, reachable only between its
# own namespaces:
#
#   alice   198.51.100.10/24 ---- 198.51.100.1 \
#   mallory 203.0.113.20/24  ---- 203.0.113.1   gw (knockgate, forwarding on)
#   lan     192.0.2.10/24    ---- 192.0.2.1    /   gw:2222 --DNAT--> lan:22
#
# Everything it makes (namespaces named kgdemo-<pid>-*, a temp dir, the
# daemon and the listeners) is removed on exit, Ctrl-C or SIGTERM; leftovers
# of an earlier run that was killed outright are removed at start.
set -euo pipefail

usage() { echo "usage: $0 /path/to/knockgate" >&2; exit 2; }
[ $# -eq 1 ] || usage
BIN=$(realpath -e -- "$1" 2>/dev/null) || { echo "demo: no knockgate binary at $1 (run 'make build')" >&2; exit 2; }
[ -x "$BIN" ] || { echo "demo: $BIN is not executable" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "demo: needs root (it builds network namespaces and loads iptables rules)" >&2; exit 2; }
for c in ip iptables-restore ip6tables-restore nc knock ss timeout realpath; do
	command -v "$c" >/dev/null || { echo "demo: missing $c (Debian: apt-get install iproute2 iptables netcat-openbsd knockd coreutils)" >&2; exit 2; }
done

START=$(date +%s.%N)
PREFIX="kgdemo-$$"
NS_GW="$PREFIX-gw" NS_ALICE="$PREFIX-alice" NS_MALLORY="$PREFIX-mallory" NS_LAN="$PREFIX-lan"
GW_ALICE=198.51.100.1 GW_MALLORY=203.0.113.1
CONNECT_TIMEOUT=2 # seconds nc waits for a connection that the gate drops

# ---- output -------------------------------------------------------------
if [ -t 1 ]; then
	B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' Y=$'\e[33m' N=$'\e[0m'
else
	B= G= R= D= Y= N=
fi
STEP=0 FAILED=0 PASSED=0
step() { STEP=$((STEP + 1)); printf '\n%s== %d. %s%s\n' "$B" "$STEP" "$*" "$N"; }
say()  { printf '   %s\n' "$*"; }
cmd()  { printf '   %s$ %s%s\n' "$D" "$*" "$N"; }
ok()   { PASSED=$((PASSED + 1)); printf '   %s✔ %s%s\n' "$G" "$*" "$N"; }
bad()  { FAILED=$((FAILED + 1)); printf '   %s✘ %s%s\n' "$R" "$*" "$N"; }
die()  { bad "$*"; exit 1; }

# ---- cleanup ------------------------------------------------------------
WORK= DAEMON_PID= LISTENER_PIDS=() CLEANED=
# alive PID: running, not just an exited child that bash has yet to reap (a
# zombie, which kill -0 still finds).
alive() {
	local stat
	read -r stat 2>/dev/null </proc/"$1"/stat || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}
# stop_pid PID: SIGTERM, wait up to 3s, then SIGKILL. Only ever used on
# processes this script started (or, at start, processes left inside the
# namespaces of an earlier demo run).
stop_pid() {
	local pid=$1 i
	if alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 30); do alive "$pid" || break; sleep 0.1; done
		alive "$pid" && kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null || true # reap it if it is our child
}
# drop_netns NAME: end the processes still inside it, then delete it.
drop_netns() {
	local ns=$1 pid
	for pid in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "$pid"; done
	ip netns delete "$ns" 2>/dev/null || true
}
cleanup() {
	[ -z "$CLEANED" ] || return 0
	CLEANED=1
	set +e
	trap - ERR
	printf '\n%s== cleanup%s\n' "$B" "$N"
	if [ -n "$DAEMON_PID" ] && alive "$DAEMON_PID"; then
		stop_pid "$DAEMON_PID"
		if log_has 'msg="knockgate stopped"'; then
			say "the daemon stopped on SIGTERM (it logged \"knockgate stopped\")"
		else
			bad "the daemon did not log \"knockgate stopped\" when sent SIGTERM"
		fi
	fi
	local pid ns
	for pid in "${LISTENER_PIDS[@]}"; do stop_pid "$pid"; done
	for ns in "$NS_ALICE" "$NS_MALLORY" "$NS_LAN" "$NS_GW"; do drop_netns "$ns"; done
	[ -n "$WORK" ] && rm -rf -- "$WORK"
	if ip netns list | grep -q "^$PREFIX-"; then
		printf '   %s✘ namespaces left behind: %s%s\n' "$R" "$(ip netns list | grep "^$PREFIX-" | tr '\n' ' ')" "$N"
	else
		say "daemon and listeners stopped, namespaces $PREFIX-{gw,alice,mallory,lan} and temp dir removed"
	fi
}
trap cleanup EXIT
# An unexpected failure of a setup command (set -e) says which one.
set -E
trap 'bad "command failed (line $LINENO): $BASH_COMMAND"' ERR
trap 'echo; echo "demo: interrupted"; cleanup; exit 130' INT
trap 'echo; echo "demo: terminated"; cleanup; exit 143' TERM

# Leftovers of an earlier run that could not clean up (SIGKILL, power cut):
# namespaces and temp dirs whose owning script is no longer running.
demo_running() { alive "$1" && grep -qa 'demo\.sh' /proc/"$1"/cmdline; }
for ns in $(ip netns list | awk '/^kgdemo-[0-9]+-/ {print $1}'); do
	owner=${ns#kgdemo-}; owner=${owner%%-*}
	if ! demo_running "$owner"; then
		echo "demo: removing leftover namespace $ns"
		drop_netns "$ns"
	fi
done
for d in /tmp/kgdemo-*.*; do
	[ -d "$d" ] || continue
	owner=${d#/tmp/kgdemo-}; owner=${owner%%.*}
	demo_running "$owner" || rm -rf -- "$d"
done

# ---- helpers --------------------------------------------------------------
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.1s until COMMAND
# succeeds; fail the demo after SECONDS.
wait_for() {
	local secs=$1 what=$2 i; shift 2
	for i in $(seq $((secs * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# try_connect NS HOST PORT [DATA]: one TCP connect from NS, as nc does it;
# sends DATA if given. Prints nc's verbose result line; returns nc's status.
try_connect() {
	local ns=$1 host=$2 port=$3 data=${4-}
	if [ -n "$data" ]; then
		printf '%s\n' "$data" | in_ns "$ns" timeout --foreground $((CONNECT_TIMEOUT + 3)) nc -v -N -w "$CONNECT_TIMEOUT" "$host" "$port" 2>&1 >/dev/null
	else
		in_ns "$ns" timeout --foreground $((CONNECT_TIMEOUT + 3)) nc -v -z -w "$CONNECT_TIMEOUT" "$host" "$port" 2>&1 </dev/null
	fi
}

# expect_open WHO NS HOST PORT [DATA]
expect_open() {
	local who=$1 ns=$2 host=$3 port=$4 data=${5-} out
	if [ -n "$data" ]; then
		cmd "echo $data | ip netns exec $who nc -N -w $CONNECT_TIMEOUT $host $port"
	else
		cmd "ip netns exec $who nc -z -w $CONNECT_TIMEOUT $host $port"
	fi
	if out=$(try_connect "$ns" "$host" "$port" "$data"); then
		ok "$who connected to $host tcp/$port"
	else
		bad "$who could not connect to $host tcp/$port, but should have: ${out:-no output}"
	fi
}

# expect_blocked WHO NS HOST PORT: the gate must drop the SYN, so the connect
# times out (a refusal would mean the SYN got through to a closed port).
expect_blocked() {
	local who=$1 ns=$2 host=$3 port=$4 out t0
	cmd "ip netns exec $who nc -z -w $CONNECT_TIMEOUT $host $port"
	t0=$(date +%s.%N)
	if out=$(try_connect "$ns" "$host" "$port"); then
		bad "$who connected to $host tcp/$port, but the gate should have dropped it"
	elif grep -q 'timed out' <<<"$out"; then
		ok "$who's SYN to $host tcp/$port was dropped (no answer, timed out after $(secs_since "$t0")s)"
	else
		bad "$who's connect to $host tcp/$port failed, but not by timing out: $out"
	fi
}

secs_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
log_has() { grep -q -- "$1" "$WORK/knockgate.log"; }
show_log() { # show_log PATTERN: print the daemon's matching log lines
	local line
	while IFS= read -r line; do printf '   %s│ %s%s\n' "$Y" "$line" "$N"; done < <(grep -- "$1" "$WORK/knockgate.log" || true)
}

# ---- the lab --------------------------------------------------------------
printf '%sknockgate demo%s  (%s, lab prefix %s)\n' "$B" "$N" "$("$BIN" version)" "$PREFIX"

step "Build the lab: four network namespaces joined by veth pairs"
WORK=$(mktemp -d "/tmp/kgdemo-$$.XXXXXX")
for ns in "$NS_GW" "$NS_ALICE" "$NS_MALLORY" "$NS_LAN"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
# link NS GW_IF NS_IF GW_ADDR NS_ADDR: a veth pair from gw to NS, and NS's
# default route through gw.
link() {
	local ns=$1 gwif=$2 nsif=$3 gwaddr=$4 nsaddr=$5
	ip -n "$NS_GW" link add "$gwif" type veth peer name "$nsif" netns "$ns"
	ip -n "$NS_GW" addr add "$gwaddr" dev "$gwif"
	ip -n "$ns" addr add "$nsaddr" dev "$nsif"
	ip -n "$NS_GW" link set "$gwif" up
	ip -n "$ns" link set "$nsif" up
	ip -n "$ns" route add default via "${gwaddr%/*}"
}
link "$NS_ALICE" to-alice eth0 198.51.100.1/24 198.51.100.10/24
link "$NS_MALLORY" to-mallory eth0 203.0.113.1/24 203.0.113.20/24
link "$NS_LAN" to-lan eth0 192.0.2.1/24 192.0.2.10/24
in_ns "$NS_GW" sysctl -qw net.ipv4.ip_forward=1
say "alice   198.51.100.10  ──  198.51.100.1 ┐"
say "mallory 203.0.113.20   ──  203.0.113.1  ├ gw (runs knockgate, forwards)"
say "lan     192.0.2.10     ──  192.0.2.1    ┘ gw tcp/2222 is DNATed to lan tcp/22"
ok "namespaces $PREFIX-{gw,alice,mallory,lan} are up"

step "Load the static steering rules into gw"
cmd "knockgate rules --dnat tcp/2222=192.0.2.10:22"
"$BIN" rules --dnat tcp/2222=192.0.2.10:22 >"$WORK/rules.all"
# Split the output at its two marker lines.
awk -v v4="$WORK/rules.v4" -v v6="$WORK/rules.v6" '
	/^# ---- iptables-restore --noflush ----$/  { out = v4; next }
	/^# ---- ip6tables-restore --noflush ----$/ { out = v6; next }
	out { print > out }' "$WORK/rules.all"
[ -s "$WORK/rules.v4" ] && [ -s "$WORK/rules.v6" ] || die "knockgate rules printed no iptables/ip6tables sections"
grep -v '^#' "$WORK/rules.v4" | sed "s/^/   $D│ /; s/\$/$N/"
in_ns "$NS_GW" iptables-restore --noflush <"$WORK/rules.v4" || die "iptables-restore refused the IPv4 rules"
in_ns "$NS_GW" ip6tables-restore --noflush <"$WORK/rules.v6" || die "ip6tables-restore refused the IPv6 rules"
ok "every NEW TCP/UDP connection to gw is now queued to NFQUEUE 0 (no --queue-bypass: fail-closed)"

step "Write the demo policy and start the daemon in gw"
POLICY="$WORK/policy.hcl"
cat >"$POLICY" <<EOF
gate {
  queue       = 0
  unprotected = "accept" # ports no door names stay reachable
  # The lab keeps its state and control socket in its own temp dir.
  state_file     = "$WORK/state.json"
  control_socket = "$WORK/knockgate.sock"
}

# Knock tcp/7000, udp/8000, tcp/9000 within 10s: tcp/22 opens to you for 10s.
door "ssh" {
  sequence         = ["tcp/7000", "udp/8000", "tcp/9000"]
  sequence_timeout = "10s"
  open             = ["tcp/22"]
  open_for         = "10s"
}

# gw tcp/2222 is DNATed to the LAN host 192.0.2.10:22 by a static rule; the
# gate sees the port before DNAT, so this door opens tcp/2222. Only alice's
# network may knock.
door "lan" {
  sequence         = ["udp/41001", "tcp/41002", "udp/41003"]
  sequence_timeout = "10s"
  open             = ["tcp/2222"]
  open_for         = "10s"
  close_sequence   = ["udp/41010", "udp/41011"]
  allow_from       = ["198.51.100.0/24"]
}
EOF
sed "s/^/   $D│ /; s/\$/$N/" "$POLICY"
cmd "knockgate validate --config policy.hcl"
"$BIN" validate --config "$POLICY" | sed 's/^/   /' || die "the demo policy does not validate"
cmd "ip netns exec gw knockgate run --config policy.hcl 2>knockgate.log &"
# Started with ip netns exec itself, not the in_ns function: a function
# sent to the background runs in a bash subshell, and $! would be that
# subshell, which a SIGTERM ends while the daemon it waits for runs on.
# ip netns exec execs the command, so $! is the daemon.
ip netns exec "$NS_GW" "$BIN" run --config "$POLICY" </dev/null >"$WORK/knockgate.log" 2>&1 &
DAEMON_PID=$!
ready() { log_has 'knockgate ready' || ! alive "$DAEMON_PID"; }
if ! wait_for 10 "daemon" ready || ! alive "$DAEMON_PID"; then
	show_log .
	die "the daemon did not log 'knockgate ready' within 10s"
fi
show_log 'knockgate ready'
ok "knockgate is reading the queue"

# Listeners: an "sshd" on gw tcp/22 and one on the LAN host's tcp/22 that
# records what it receives.
ip netns exec "$NS_GW" nc -lk 22 </dev/null >"$WORK/gw-listener.out" 2>&1 &
LISTENER_PIDS+=($!)
ip netns exec "$NS_LAN" nc -lk 22 </dev/null >"$WORK/lan-listener.out" 2>&1 &
LISTENER_PIDS+=($!)
listening() { in_ns "$1" ss -Hltn 'sport = :22' | grep -q .; }
wait_for 5 "gw listener" listening "$NS_GW" || die "no listener on gw tcp/22 after 5s"
wait_for 5 "lan listener" listening "$NS_LAN" || die "no listener on lan tcp/22 after 5s"
ok "listeners on gw tcp/22 and lan 192.0.2.10 tcp/22"

step "alice tries gw tcp/22 without knocking"
expect_blocked alice "$NS_ALICE" "$GW_ALICE" 22

step "alice knocks with Debian's knock client"
cmd "ip netns exec alice knock -d 100 $GW_ALICE 7000 8000:udp 9000"
in_ns "$NS_ALICE" timeout --foreground 5 knock -d 100 "$GW_ALICE" 7000 8000:udp 9000 || bad "knock failed"
say "(the gate drops the knocks too, so to a port scan they look filtered)"

step "alice connects to gw tcp/22"
expect_open alice "$NS_ALICE" "$GW_ALICE" 22

step "The daemon logged the grant"
if wait_for 3 "grant log" log_has 'msg="grant opened" door=ssh source=198.51.100.10'; then
	show_log 'msg="grant opened" door=ssh'
	ok "grant for door ssh, source 198.51.100.10, open_for 10s"
else
	show_log .
	bad "no 'grant opened' log line for alice"
fi

step "mallory, from another network, still cannot reach tcp/22"
say "(the grant belongs to alice's address alone)"
expect_blocked mallory "$NS_MALLORY" "$GW_MALLORY" 22
say "mallory knocks the right ports in the wrong order:"
cmd "ip netns exec mallory knock -d 100 $GW_MALLORY 9000 8000:udp 7000"
in_ns "$NS_MALLORY" timeout --foreground 5 knock -d 100 "$GW_MALLORY" 9000 8000:udp 7000 || bad "knock failed"
expect_blocked mallory "$NS_MALLORY" "$GW_MALLORY" 22
if log_has 'msg="grant opened".*source=203.0.113.20'; then bad "the daemon opened a grant for mallory:"; show_log 'source=203.0.113.20'; fi
if wait_for 3 "knock failed log" log_has 'msg="knock failed".*source=203.0.113.20'; then
	say "the daemon says why (one line a minute per source and door):"
	show_log 'msg="knock failed".*source=203.0.113.20'
else
	bad "no 'knock failed' log line for mallory"
fi

step "The DNAT door: gw tcp/2222 forwards to the LAN host, behind door \"lan\""
expect_blocked alice "$NS_ALICE" "$GW_ALICE" 2222
cmd "ip netns exec alice knockgate knock --door lan --config policy.hcl $GW_ALICE"
in_ns "$NS_ALICE" timeout --foreground 5 "$BIN" knock --door lan --config "$POLICY" "$GW_ALICE" | sed 's/^/   /' || bad "knockgate knock failed"
TOKEN="hello-from-alice-$$"
expect_open alice "$NS_ALICE" "$GW_ALICE" 2222 "$TOKEN"
if wait_for 3 "lan listener output" grep -q "$TOKEN" "$WORK/lan-listener.out"; then
	ok "the LAN host 192.0.2.10 received \"$TOKEN\" on tcp/22 (via DNAT)"
else
	bad "the LAN host's listener did not receive the message"
fi
wait_for 3 "grant log" log_has 'msg="grant opened" door=lan' || true
show_log 'msg="grant opened" door=lan'

step "mallory knocks door \"lan\" correctly, but allow_from admits only 198.51.100.0/24"
cmd "ip netns exec mallory knockgate knock --door lan --config policy.hcl $GW_MALLORY"
in_ns "$NS_MALLORY" timeout --foreground 5 "$BIN" knock --door lan --config "$POLICY" "$GW_MALLORY" | sed 's/^/   /' || bad "knockgate knock failed"
expect_blocked mallory "$NS_MALLORY" "$GW_MALLORY" 2222

step "alice closes door \"lan\" with its close_sequence"
cmd "ip netns exec alice knockgate knock --close --door lan --config policy.hcl $GW_ALICE"
in_ns "$NS_ALICE" timeout --foreground 5 "$BIN" knock --close --door lan --config "$POLICY" "$GW_ALICE" | sed 's/^/   /' || bad "knockgate knock --close failed"
if wait_for 3 "revoke log" log_has 'msg="grant revoked" door=lan source=198.51.100.10'; then
	show_log 'msg="grant revoked"'
	ok "grant revoked at once"
else
	bad "no 'grant revoked' log line"
fi
expect_blocked alice "$NS_ALICE" "$GW_ALICE" 2222

step "alice's ssh grant runs out after open_for (10s)"
if wait_for 15 "expiry log" log_has 'msg="grant expired" door=ssh source=198.51.100.10'; then
	show_log 'msg="grant expired" door=ssh'
	ok "the daemon expired the grant"
else
	bad "no 'grant expired' log line for alice within 15s"
fi
expect_blocked alice "$NS_ALICE" "$GW_ALICE" 22

if [ "$FAILED" -ne 0 ]; then
	printf '\n%s== the daemon log, for the failed checks%s\n' "$B" "$N"
	show_log .
fi
trap - INT TERM
cleanup
ELAPSED=$(secs_since "$START")
echo
if [ "$FAILED" -eq 0 ]; then
	printf '%s✔ demo passed: %d checks in %ss%s\n' "$G$B" "$PASSED" "$ELAPSED" "$N"
else
	printf '%s✘ demo FAILED: %d of %d checks failed (%ss)%s\n' "$R$B" "$FAILED" "$((PASSED + FAILED))" "$ELAPSED" "$N"
	exit 1
fi
