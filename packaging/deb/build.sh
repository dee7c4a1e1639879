#!/usr/bin/env bash
# build.sh ROOT VERSION OUTDIR: makes a Debian package, with dpkg-deb alone
# and no network, of the tree that `make install DESTDIR=ROOT PREFIX=/usr`
# wrote. It adds what only the package has: the conffile
# /etc/knockgate/policy.hcl (no doors, no keys), /var/lib/knockgate, the
# copyright file with the license of every Go module compiled in, and the
# maintainer scripts, which never enable or start the service. `make deb`
# runs it; it prints the .deb's path.
set -euo pipefail

die() { echo "build.sh: $*" >&2; exit 1; }
[ $# -eq 3 ] || die "usage: build.sh ROOT VERSION OUTDIR"
root=$1 version=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$root/usr/sbin/knockgate
[ -x "$bin" ] || die "no $bin: run make install DESTDIR=$root PREFIX=/usr first"
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian: apt-get install dpkg)"

# The Debian version: a tag v1.2.0 gives 1.2.0, a commit after it
# 1.2.0+3+gabc1234; no tag gives 0~gitDATE.COMMIT, which sorts before any
# release. Debian allows no '-' in a version without a revision.
# (A bare commit may start with a digit too: a release has a dot.)
if [[ $version =~ ^v?[0-9]+\.[0-9] ]]; then
	debver=${version#v}
else
	debver=0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date -u +%Y%m%d).$version
fi
debver=${debver//-/+}
[[ $debver =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "cannot make a Debian version of $version"

# The architecture the binary was built for, as Debian names it.
buildinfo=$(go version -m "$bin") || die "go version -m $bin failed"
goarch=$(awk '$1 == "build" && $2 ~ /^GOARCH=/ { sub(/^GOARCH=/, "", $2); print $2 }' <<<"$buildinfo")
case $goarch in
amd64 | arm64 | riscv64 | s390x) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf ;;
mipsle) arch=mipsel ;;
mips64le) arch=mips64el ;;
ppc64le) arch=ppc64el ;;
*) die "no Debian architecture for GOARCH=$goarch" ;;
esac

install -d -m 0755 "$root/etc/knockgate"
install -m 0600 "$here/policy.hcl" "$root/etc/knockgate/policy.hcl"
install -d -m 0700 "$root/var/lib/knockgate"

doc=$root/usr/share/doc/knockgate
[ -d "$doc" ] || die "no $doc: make install did not write the docs"
find "$root/usr/share/man" -type f ! -name '*.gz' -exec gzip -9n {} +
gzip -9n "$doc/README.md"
mv "$doc/CHANGELOG.md" "$doc/changelog" && gzip -9n "$doc/changelog"

# copyright: knockgate's own, then each module compiled in with its own
# license text (and NOTICE, which Apache-2.0 asks to pass on).
modcache=$(go env GOMODCACHE)
{
	cat "$here/copyright"
	while read -r mod ver; do
		spdx=$(awk -v m="$mod" '$1 == m { print $2 }' "$here/modules.txt")
		[ -n "$spdx" ] || die "module $mod is compiled into knockgate but has no license in packaging/deb/modules.txt: look it up and add it"
		if [ "$mod" = std ]; then
			dir=$(go env GOROOT)
		else
			dir=$modcache/$(sed 's/[A-Z]/!\L&/g' <<<"$mod")@$ver
		fi
		lic=$(ls "$dir"/LICENSE "$dir"/LICENSE.md "$dir"/LICENSE.txt "$dir"/COPYING 2>/dev/null | head -1) ||
			true
		[ -n "$lic" ] || die "no license file in $dir for $mod $ver"
		holders=$(cat "$lic" "$dir"/NOTICE* 2>/dev/null | grep -E '^[[:space:]#]*Copyright[[:space:]]+(\(c\)|\(C\)|©|[0-9])' |
			sed 's/^[[:space:]#]*Copyright[[:space:]]*//' | sort -u || true)
		printf '\nFiles: go-modules/%s/*\n' "$mod"
		printf 'Copyright: %s\n' "$(sed '2,$s/^/ /' <<<"${holders:-the authors of $mod}")"
		printf 'License: %s\n' "$spdx"
		sed 's/[[:space:]]*$//; s/^$/./; s/^/ /' "$lic"
		printf 'Comment: %s %s, compiled into /usr/sbin/knockgate.\n' "$mod" "$ver"
		for n in "$dir"/NOTICE*; do
			[ -f "$n" ] || continue
			printf ' .\n Its %s:\n .\n' "${n##*/}"
			sed 's/[[:space:]]*$//; s/^$/./; s/^/ /' "$n"
		done
	done < <(awk '$1 == "dep" { print $2, $3 }' <<<"$buildinfo"; echo std "$(awk 'NR == 1 { print $2 }' <<<"$buildinfo")")
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

ctl=$root/DEBIAN
install -d -m 0755 "$ctl"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# The Maintainer field: DEB_MAINTAINER, else the author of the commit built
# (a CI checkout has that, where it often has no git user configured).
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || true)}
[[ $maintainer =~ ^[^\<]+\ \<[^@\>]+@[^\>]+\>$ ]] || die "no maintainer: set DEB_MAINTAINER='Name <address>' (outside a git checkout)"
sed -e "s/@VERSION@/$debver/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s|@MAINTAINER@|$maintainer|" \
	"$here/control.in" >"$ctl/control"
echo /etc/knockgate/policy.hcl >"$ctl/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$ctl/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$ctl/md5sums"
chmod 0644 "$ctl/control" "$ctl/conffiles" "$ctl/md5sums"

mkdir -p "$out"
deb=$out/knockgate_${debver}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
