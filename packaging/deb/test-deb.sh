#!/usr/bin/env bash
# test-deb.sh DEB: installs the knockgate package with dpkg on this machine,
# checks what it installed and that it started nothing, runs the installed
# binary, validates an installed example and the conffile, verifies the
# installed unit with systemd-analyze, then removes and purges it and checks
# that nothing of it is left. Root. `make deb-test` (part of `make test`)
# runs it on the package `make deb` built.
#
# It refuses to run where knockgate is already installed as a package: it
# would replace and purge the operator's copy.
set -euo pipefail

die() { echo "test-deb: $*" >&2; exit 2; }
[ $# -eq 1 ] || die "usage: test-deb.sh path/to/knockgate_VERSION_ARCH.deb"
deb=$(realpath -e -- "$1") || die "no package at $1"
[ "$(id -u)" = 0 ] || die "needs root (dpkg -i)"
for c in dpkg dpkg-deb dpkg-query systemd-analyze; do
	command -v "$c" >/dev/null || die "missing $c (Debian: apt-get install dpkg systemd)"
done

# One package test at a time on this machine.
exec 9>/tmp/knockgate-deb-test.lock
flock 9

status() { dpkg-query -W -f='${db:Status-Abbrev}' knockgate 2>/dev/null || true; }
case $(status) in
'' | 'un '*) ;;
*) die "knockgate is installed here as a package ($(status)); the test would replace and purge it" ;;
esac

PASSED=0 FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok    $*"; }
bad() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }
# check DESCRIPTION COMMAND...: ok when COMMAND succeeds; its output shown
# when it fails.
check() {
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$what"
	else
		bad "$what"
		sed 's/^/      /' <<<"$out"
	fi
}

installed=
cleanup() {
	if [ -n "$installed" ]; then
		dpkg --purge knockgate >/dev/null 2>&1 || echo "test-deb: could not purge knockgate: run dpkg --purge knockgate" >&2
	fi
}
trap cleanup EXIT

# ---- the package itself -------------------------------------------------
listing=$(dpkg-deb -c "$deb")
mapfile -t paths < <(dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's|^\./|/|; s|/$||' | grep -v '^/\?$')
has() { printf '%s\n' "${paths[@]}" | grep -qxF -- "$1"; }
for p in /usr/sbin/knockgate /usr/lib/systemd/system/knockgate.service /etc/knockgate/policy.hcl \
	/usr/share/man/man8/knockgate.8.gz /usr/share/man/man5/knockgate.hcl.5.gz \
	/usr/share/bash-completion/completions/knockgate /usr/share/zsh/vendor-completions/_knockgate \
	/usr/share/doc/knockgate/copyright /usr/share/doc/knockgate/examples/minimal.hcl \
	/usr/share/doc/knockgate/examples/reference.hcl /var/lib/knockgate; do
	check "the package holds $p" has "$p"
done
check "policy.hcl is a conffile" grep -qxF /etc/knockgate/policy.hcl <(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
check "policy.hcl is mode 0600 root:root" grep -qE '^-rw------- root/root .* \./etc/knockgate/policy\.hcl$' <<<"$listing"
check "/var/lib/knockgate is mode 0700" grep -qE '^drwx------ root/root .* \./var/lib/knockgate/$' <<<"$listing"
conffile=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./etc/knockgate/policy.hcl)
check "policy.hcl opens no door and holds no key or secret" \
	bash -c '! grep -vE "^[[:space:]]*(#|$)" <<<"$1" | grep -qE "door|key|secret"' _ "$conffile"

# A dpkg told to skip paths (path-exclude, as minimised container images
# set for /usr/share/doc and /usr/share/man) would not install what this
# test checks: say so rather than report missing files.
for cfg in /etc/dpkg/dpkg.cfg /etc/dpkg/dpkg.cfg.d/*; do
	[ -f "$cfg" ] || continue
	while read -r key pat; do
		for p in "${paths[@]}"; do
			# shellcheck disable=SC2053 # $pat is a glob, as dpkg reads it
			if [[ $p == $pat ]]; then
				die "dpkg here skips $p (path-exclude $pat in $cfg): remove that line to test the package"
			fi
		done
	done < <(sed -n 's/^path-exclude[= ]\(.*\)$/path-exclude \1/p' "$cfg")
done

# Directories that exist before the install may stay after the purge; no
# other path of the package may.
preexisting=()
for p in "${paths[@]}"; do
	[ -e "$p" ] && [ -d "$p" ] && preexisting+=("$p")
	[ -e "$p" ] && ! [ -d "$p" ] && die "$p exists before the install: not a clean machine for this test"
done

# ---- install ------------------------------------------------------------
installed=1
if out=$(dpkg -i "$deb" 2>&1); then
	ok "dpkg -i $(basename "$deb")"
else
	bad "dpkg -i $(basename "$deb")"
	sed 's/^/      /' <<<"$out"
	exit 1
fi
check "postinst says the service is neither enabled nor started" grep -q 'neither enabled nor started' <<<"$out"
check "dpkg lists knockgate as installed" test "$(status)" = 'ii '
for p in "${paths[@]}"; do
	[ -e "$p" ] || bad "$p is not installed"
done

# Nothing started or enabled: no link in any .wants directory, no process
# running the installed binary (other knockgate processes, such as the
# integration tests', run other binaries).
wants=$(find /etc/systemd/system -name knockgate.service -path '*.wants/*' 2>/dev/null)
check "the service is not enabled" test -z "$wants"
running=
for exe in /proc/[0-9]*/exe; do
	[ "$(readlink "$exe" 2>/dev/null)" = /usr/sbin/knockgate ] && running+=" ${exe//[!0-9]/}"
done
check "no process runs /usr/sbin/knockgate" test -z "$running"

check "knockgate --version runs" bash -c '/usr/sbin/knockgate --version | grep -q "^knockgate "'
check "knockgate validate accepts the installed example minimal.hcl" \
	/usr/sbin/knockgate validate --config /usr/share/doc/knockgate/examples/minimal.hcl
check "knockgate validate accepts the installed conffile, with no doors" \
	bash -c '/usr/sbin/knockgate validate --config /etc/knockgate/policy.hcl | grep -q "0 door(s)"'

# systemd-analyze verify loads the unit as systemd would (directives,
# ExecStart's binary, sandboxing options) without a running systemd.
if out=$(systemd-analyze verify /usr/lib/systemd/system/knockgate.service 2>&1) &&
	! grep -q 'knockgate' <<<"$out"; then
	ok "systemd-analyze verify knockgate.service"
else
	bad "systemd-analyze verify knockgate.service"
	sed 's/^/      /' <<<"$out"
fi
check "the installed unit starts /usr/sbin/knockgate" \
	grep -q '^ExecStart=/usr/sbin/knockgate run --config /etc/knockgate/policy.hcl$' /usr/lib/systemd/system/knockgate.service

check "knockgate(8) is a man page" bash -c 'zcat /usr/share/man/man8/knockgate.8.gz | grep -q "^\.TH KNOCKGATE 8"'
check "knockgate.hcl(5) is a man page" bash -c 'zcat /usr/share/man/man5/knockgate.hcl.5.gz | grep -q "^\.TH KNOCKGATE.HCL 5"'
check "the installed bash completion completes knockgate st to status" bash --norc --noprofile -c \
	'source /usr/share/bash-completion/completions/knockgate; COMP_WORDS=(knockgate st); COMP_CWORD=1; _knockgate; [ "${COMPREPLY[*]}" = status ]'

# ---- remove keeps configuration and state; a reinstall keeps local edits --
echo '# edited by test-deb' >>/etc/knockgate/policy.hcl
echo '{}' >/var/lib/knockgate/state.json
if out=$(dpkg -i "$deb" 2>&1); then ok "dpkg -i again over the installed package"; else bad "dpkg -i again"; sed 's/^/      /' <<<"$out"; fi
check "a reinstall keeps the edited conffile" grep -q '^# edited by test-deb$' /etc/knockgate/policy.hcl
# An upgrade: the same package under a later version, repacked here.
work=$(mktemp -d /tmp/knockgate-deb-test.XXXXXX)
trap 'rm -rf "$work"; cleanup' EXIT
dpkg-deb -R "$deb" "$work/root"
version=$(dpkg-deb -f "$deb" Version)
sed -i "s/^Version: .*/Version: $version+upgrade/" "$work/root/DEBIAN/control"
dpkg-deb --root-owner-group --build "$work/root" "$work/upgrade.deb" >/dev/null
if out=$(dpkg -i "$work/upgrade.deb" 2>&1); then ok "dpkg -i upgrades to $version+upgrade"; else bad "dpkg -i of the upgrade"; sed 's/^/      /' <<<"$out"; fi
check "the upgrade is installed" test "$(dpkg-query -W -f='${Version}' knockgate)" = "$version+upgrade"
check "an upgrade does not repeat the first-install message" bash -c '! grep -q "neither enabled nor started" <<<"$1"' _ "$out"
check "an upgrade keeps the edited conffile and the saved state" \
	bash -c 'grep -q "^# edited by test-deb$" /etc/knockgate/policy.hcl && test -e /var/lib/knockgate/state.json'
if out=$(dpkg -r knockgate 2>&1); then ok "dpkg -r knockgate"; else bad "dpkg -r knockgate"; sed 's/^/      /' <<<"$out"; fi
check "dpkg -r removes the binary" test ! -e /usr/sbin/knockgate
check "dpkg -r keeps the policy" test -e /etc/knockgate/policy.hcl
check "dpkg -r keeps the saved state" test -e /var/lib/knockgate/state.json

# ---- purge leaves nothing -----------------------------------------------
if out=$(dpkg --purge knockgate 2>&1); then ok "dpkg --purge knockgate"; else bad "dpkg --purge knockgate"; sed 's/^/      /' <<<"$out"; fi
installed=
check "dpkg no longer knows knockgate" test -z "$(dpkg-query -W knockgate 2>/dev/null || true)"
left=()
for p in "${paths[@]}"; do
	[ -e "$p" ] || continue
	printf '%s\n' "${preexisting[@]}" | grep -qxF -- "$p" || left+=("$p")
done
check "purge leaves none of the package's paths" test ${#left[@]} -eq 0
[ ${#left[@]} -eq 0 ] || printf '      left: %s\n' "${left[@]}"
check "purge removes /etc/knockgate" test ! -e /etc/knockgate
check "purge removes /var/lib/knockgate" test ! -e /var/lib/knockgate

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
