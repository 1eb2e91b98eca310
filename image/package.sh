#!/usr/bin/env bash
# Builds the installable artifacts of jnrelay from the cross binaries of
# image/cross.sh (make cross):
#   OUTDIR/jnrelay-overlay-<arch>.tar.gz  rootfs overlay, every arch
#   OUTDIR/jnrelay_<version>_<debarch>.deb Debian / Raspberry Pi OS: amd64, arm64, armhf
#   OUTDIR/jnrelay_<version>_<arch>.ipk    OpenWrt: mipsel_24kc, mips_24kc,
#                                          arm_cortex-a7_neon-vfpv4, aarch64_cortex-a53, x86_64
# Usage: image/package.sh [-b BINDIR] [-o OUTDIR] [ARCH...]
#   BINDIR holds relayd-linux-<arch> (default bin/cross), OUTDIR defaults to
#   dist, ARCH is any of armv6 armv7 arm64 mipsle mips amd64 (default all).
# Environment: JNRELAY_VERSION overrides the package version (default: from
# git, Debian-valid); SOURCE_DATE_EPOCH fixes every timestamp (default: the
# time of the last commit), so the same tree and binaries give the same bytes.
# Needs: tar (GNU), gzip, dpkg-deb.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
bindir=$top/bin/cross
outdir=$top/dist
while getopts "b:o:" opt; do
	case $opt in
	b) bindir=$OPTARG ;;
	o) outdir=$OPTARG ;;
	*)
		echo "usage: $0 [-b BINDIR] [-o OUTDIR] [ARCH...]" >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
all_arches=(armv6 armv7 arm64 mipsle mips amd64)
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=("${all_arches[@]}")

die() {
	echo "package.sh: $*" >&2
	exit 1
}

# Debian architecture of a cross target; empty: no .deb for it. armv6
# (GOARM=6) runs on every armhf board, Raspberry Pi 1 and Zero included.
deb_arch() {
	case $1 in
	amd64) echo amd64 ;; arm64) echo arm64 ;; armv6) echo armhf ;; *) echo "" ;;
	esac
}
# OpenWrt package architecture; empty: no .ipk for it. The binaries are
# static and soft-float on MIPS, so one package serves every board of the
# arch family; these names are the most common targets (MT7621, ath79,
# ipq40xx/bcm2709, mediatek/bcm27xx arm64, x86/64).
ipk_arch() {
	case $1 in
	mipsle) echo mipsel_24kc ;; mips) echo mips_24kc ;; armv7) echo arm_cortex-a7_neon-vfpv4 ;;
	arm64) echo aarch64_cortex-a53 ;; amd64) echo x86_64 ;; *) echo "" ;;
	esac
}

for a in "${arches[@]}"; do
	case " ${all_arches[*]} " in *" $a "*) ;; *) die "unknown arch '$a' (one of: ${all_arches[*]})" ;; esac
	[ -f "$bindir/relayd-linux-$a" ] || die "$bindir/relayd-linux-$a missing: run make cross first"
done
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"

cd "$top"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) || die "not a git checkout: set SOURCE_DATE_EPOCH"
fi
export SOURCE_DATE_EPOCH # dpkg-deb clamps and stamps with it

# The package version, valid for dpkg and opkg: X.Y.Z from a vX.Y.Z tag
# (+gitN.HASH when N commits later), else 0.0~gitDATE.HASH; +dirty when the
# work tree differs from the commit.
version() {
	local desc base n hash
	if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
		hash=${desc##*-g}
		desc=${desc%-g*}
		n=${desc##*-}
		base=${desc%-*}
		base=${base#v}
		if [ "$n" = 0 ]; then echo -n "$base"; else echo -n "$base+git$n.$hash"; fi
	else
		echo -n "0.0~git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d).$(git rev-parse --short=7 HEAD)"
	fi
	git diff --quiet HEAD -- 2>/dev/null || echo -n "+dirty"
	echo
}
pkgver=${JNRELAY_VERSION:-$(version)}
dpkg --validate-version "$pkgver" || die "version '$pkgver' is not valid for dpkg"

mkdir -p "$outdir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Reproducible tar: sorted names, one mtime, root-owned, no gzip timestamp.
tar_gz() { # tar_gz OUT DIR MEMBER...
	local out=$1 dir=$2
	shift 2
	tar --format=gnu --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
		-C "$dir" -cf - "$@" | gzip -n >"$out"
}

# The files every systemd-based install has (overlay and .deb).
stage_systemd() { # stage_systemd DIR ARCH
	local d=$1 a=$2
	install -D -m 0755 "$bindir/relayd-linux-$a" "$d/usr/bin/relayd"
	install -D -m 0644 systemd/relayd.service "$d/usr/lib/systemd/system/relayd.service"
	install -D -m 0644 systemd/relayd-provision.socket "$d/usr/lib/systemd/system/relayd-provision.socket"
	install -D -m 0644 systemd/relayd-offload.service "$d/usr/lib/systemd/system/relayd-offload.service"
	install -D -m 0644 systemd/relayd-offload.socket "$d/usr/lib/systemd/system/relayd-offload.socket"
	install -D -m 0644 systemd/80-jnrelay.preset "$d/usr/lib/systemd/system-preset/80-jnrelay.preset"
	install -D -m 0644 systemd/sysusers.d/jnrelay.conf "$d/usr/lib/sysusers.d/jnrelay.conf"
	install -D -m 0644 systemd/tmpfiles.d/jnrelay.conf "$d/usr/lib/tmpfiles.d/jnrelay.conf"
	install -D -m 0644 image/relayd.default.json "$d/usr/share/jnrelay/relayd.default.json"
	install -D -m 0644 systemd/relayd-kernel-offload.conf "$d/usr/share/jnrelay/relayd-kernel-offload.conf"
	install -D -m 0644 docs/install.md "$d/usr/share/doc/jnrelay/install.md"
	install -D -m 0644 docs/configuration.md "$d/usr/share/doc/jnrelay/configuration.md"
	install -D -m 0644 README.md "$d/usr/share/doc/jnrelay/README.md"
}

# Every directory 0755 and every timestamp the same, whatever the umask
# and checkout time were.
normalize() {
	find "$1" -type d -exec chmod 0755 {} +
	find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

overlay() {
	local a=$1
	local d=$work/overlay-$a
	stage_systemd "$d" "$a"
	normalize "$d"
	tar_gz "$outdir/jnrelay-overlay-$a.tar.gz" "$d" usr
	echo "built $outdir/jnrelay-overlay-$a.tar.gz"
}

deb() {
	local a=$1 arch d out
	arch=$(deb_arch "$a")
	d=$work/deb-$a
	out=$outdir/jnrelay_${pkgver}_$arch.deb
	stage_systemd "$d" "$a"
	install -d "$d/DEBIAN"
	install -m 0755 image/debian/postinst image/debian/prerm image/debian/postrm "$d/DEBIAN/"
	# No shared libraries (static, CGO off); systemd >= 247 for
	# ProtectProc=/ProcSubset= (Debian 11, Raspberry Pi OS bullseye) and for
	# systemd-sysusers/systemd-tmpfiles in postinst. No conffiles: the only
	# file under /etc is created by tmpfiles and rewritten by relayd.
	cat >"$d/DEBIAN/control" <<EOF
Package: jnrelay
Version: $pkgver
Architecture: $arch
Maintainer: ${JNRELAY_MAINTAINER:-jnrelay project <packages@jnrelay.invalid>}
Installed-Size: $(du -sk --exclude=DEBIAN "$d" | cut -f1)
Depends: systemd (>= 247)
Section: net
Priority: optional
Homepage: https://github.com/jnrelay/jnrelay
Description: Jingle Nodes (XEP-0278) UDP relay for XMPP calls
 relayd registers with XMPP services, answers Jingle Nodes channel requests
 from XMPP clients by allocating UDP relay ports, and forwards the call's
 RTP and RTCP both ways. Runs as the unprivileged user jnrelay under a
 hardened systemd unit; configured through a local API, CLI or web page.
EOF
	normalize "$d"
	dpkg-deb --root-owner-group -Zxz --build "$d" "$out" >/dev/null
	echo "built $out"
}

ipk() {
	local a=$1 arch d c out
	arch=$(ipk_arch "$a")
	d=$work/ipk-$a/data
	c=$work/ipk-$a/control
	out=$outdir/jnrelay_${pkgver}_$arch.ipk
	install -D -m 0755 "$bindir/relayd-linux-$a" "$d/usr/bin/relayd"
	install -D -m 0755 image/openwrt/jnrelay.init "$d/etc/init.d/jnrelay"
	install -D -m 0644 image/openwrt/jnrelay.uci "$d/etc/config/jnrelay"
	install -D -m 0644 image/openwrt/keep.d "$d/lib/upgrade/keep.d/jnrelay"
	install -D -m 0644 image/openwrt/capabilities.json "$d/etc/capabilities/jnrelay.json"
	install -D -m 0644 image/openwrt/capabilities-offload.json "$d/etc/capabilities/jnrelay-offload.json"
	# On the router itself fw4 opens the ports (the init script's rules):
	# no port mapping to ask anyone for.
	install -D -m 0644 image/openwrt/relayd.default.json "$d/usr/share/jnrelay/relayd.default.json"
	# fw4 includes it at the top of its forward chain.
	install -D -m 0644 image/openwrt/fw4-forward.nft "$d/usr/share/nftables.d/chain-pre/forward/30-jnrelay.nft"
	normalize "$d"
	tar_gz "$work/ipk-$a/data.tar.gz" "$d" .
	install -d "$c"
	install -m 0755 image/openwrt/postinst image/openwrt/prerm "$c/"
	echo /etc/config/jnrelay >"$c/conffiles"
	# As OpenWrt's ipkg-build: Installed-Size is the uncompressed data tar
	# in bytes. Require-User makes default_postinst create user and group
	# jnrelay. Depends: procd runs the init script; the binary is static.
	cat >"$c/control" <<EOF
Package: jnrelay
Version: $pkgver
Depends: procd
Require-User: jnrelay:jnrelay
Section: net
Architecture: $arch
Installed-Size: $(gzip -dc "$work/ipk-$a/data.tar.gz" | wc -c)
Maintainer: ${JNRELAY_MAINTAINER:-jnrelay project <packages@jnrelay.invalid>}
SourceDateEpoch: $SOURCE_DATE_EPOCH
Description: Jingle Nodes (XEP-0278) UDP relay for XMPP calls, run by procd
 as the user jnrelay. Settings: /etc/config/jnrelay; relay: /etc/jnrelay.
EOF
	normalize "$c"
	tar_gz "$work/ipk-$a/control.tar.gz" "$c" .
	echo 2.0 >"$work/ipk-$a/debian-binary"
	touch -d "@$SOURCE_DATE_EPOCH" "$work/ipk-$a/debian-binary" "$work/ipk-$a/data.tar.gz" "$work/ipk-$a/control.tar.gz"
	chmod 0644 "$work/ipk-$a/debian-binary" "$work/ipk-$a/data.tar.gz" "$work/ipk-$a/control.tar.gz"
	# The outer archive is a gzip'd tar (not ar), members in this order.
	tar_gz "$out" "$work/ipk-$a" ./debian-binary ./data.tar.gz ./control.tar.gz
	echo "built $out"
}

echo "package version $pkgver, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH"
# One job per arch (compression dominates, xz of the .deb most).
pids=()
for a in "${arches[@]}"; do
	(
		overlay "$a"
		[ -z "$(deb_arch "$a")" ] || deb "$a"
		[ -z "$(ipk_arch "$a")" ] || ipk "$a"
	) &
	pids+=($!)
done
failed=0
for p in "${pids[@]}"; do
	wait "$p" || failed=1
done
[ "$failed" = 0 ] || die "some packages failed (see above)"
