#!/usr/bin/env bash
# Builds the bootable arm64 test image (docs/image.md): Debian's arm64 kernel
# plus an initramfs holding relayd, our init and the virtio-net modules.
# Usage: image/arm64/build.sh VERSION OUTDIR
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.gz and OUTDIR/kernel-version.
#
# The kernel package is found through apt (the metapackage linux-image-arm64
# names the current one) and downloaded once into the cache directory
# ($JNRELAY_CACHE_DIR, default /var/cache/jnrelay-build as root, else
# ${XDG_CACHE_HOME:-~/.cache}/jnrelay); later runs only check apt's lists.
# Set JNRELAY_KERNEL_DEB to a linux-image-*-arm64 .deb to skip apt altogether.
# Finding the package needs the arm64 architecture in dpkg (added here, as
# root) and its package lists (apt-get update runs only when they are missing).
set -euo pipefail
version=${1:?version}; out=${2:?outdir}
cd "$(dirname "$0")/../.."
log() { echo "image/arm64: $*"; }

if [ -n "${JNRELAY_CACHE_DIR:-}" ]; then
  cache=$JNRELAY_CACHE_DIR
elif [ "$(id -u)" -eq 0 ]; then
  cache=/var/cache/jnrelay-build
else
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/jnrelay
fi
mkdir -p "$cache" "$out"

# kernel_deb prints the path of the cached kernel package, downloading it
# first if needed.
kernel_deb() {
  if [ -n "${JNRELAY_KERNEL_DEB:-}" ]; then
    echo "$JNRELAY_KERNEL_DEB"
    return
  fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "image/arm64: dpkg has no arm64 architecture; run as root (dpkg --add-architecture arm64) or set JNRELAY_KERNEL_DEB" >&2
      exit 1
    fi
    log "dpkg --add-architecture arm64" >&2
    dpkg --add-architecture arm64
  fi
  if ! apt-cache show linux-image-arm64:arm64 >/dev/null 2>&1; then
    log "arm64 package lists missing: apt-get update" >&2
    apt-get update -q >&2
  fi
  # "Depends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)" of the candidate
  # version of the metapackage names the kernel package and its version.
  local dep pkg ver deb
  dep=$(apt-cache show --no-all-versions linux-image-arm64:arm64 | sed -n 's/^Depends: \(linux-image-[^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -n1)
  read -r pkg ver <<<"$dep"
  if [ -z "${pkg:-}" ] || [ -z "${ver:-}" ]; then
    echo "image/arm64: cannot find the kernel package in the Depends of linux-image-arm64:arm64" >&2
    exit 1
  fi
  deb="$cache/${pkg}_${ver//:/%3a}_arm64.deb"
  if [ ! -s "$deb" ]; then
    log "downloading $pkg:arm64 $ver into $cache" >&2
    # apt-get download writes into the current directory; a temporary one
    # keeps a half-written file out of the cache.
    local tmp
    tmp=$(mktemp -d "$cache/download.XXXXXX")
    # apt drops privileges to _apt for downloads where it can write.
    chown _apt "$tmp" 2>/dev/null || true
    (cd "$tmp" && apt-get download -q "$pkg:arm64=$ver" >&2)
    mv "$tmp"/*.deb "$deb"
    rmdir "$tmp"
  fi
  echo "$deb"
}

deb=$(kernel_deb)
tree="$cache/$(basename "$deb" .deb)"
if [ -z "${JNRELAY_KERNEL_DEB:-}" ]; then
  # A new kernel version replaces the old one in the cache (unpacked, a
  # kernel takes 350 MB), and leftovers of interrupted runs go.
  for old in "$cache"/linux-image-*_arm64.deb "$cache"/linux-image-*_arm64; do
    if [ -e "$old" ] && [ "$old" != "$deb" ] && [ "$old" != "$tree" ]; then
      log "removing $(basename "$old") from the cache"
      rm -rf -- "$old"
    fi
  done
  find "$cache" -maxdepth 1 \( -name 'download.*' -o -name 'unpack.*' \) -mmin +60 -exec rm -rf -- {} +
fi
if [ ! -d "$tree" ]; then
  log "unpacking $(basename "$deb")"
  tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  dpkg-deb -x "$deb" "$tmp"
  mv "$tmp" "$tree"
fi
kernel=$(find "$tree/boot" -name 'vmlinuz-*' | head -n1)
[ -n "$kernel" ] || { echo "image/arm64: no vmlinuz in $deb" >&2; exit 1; }
kver=${kernel##*/vmlinuz-}
log "kernel $kver from $(basename "$deb")"

# relayd and init: static arm64 binaries, built like make cross builds them.
build=(env GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -trimpath)
"${build[@]}" -ldflags "-s -w -X main.version=$version" -o "$out/relayd" ./relayd
"${build[@]}" -ldflags "-s -w" -o "$out/init" ./image/arm64/init

# virtio-net for the network; nf_tables, conntrack NAT (nft_nat for the
# expression, nft_chain_nat for the chain type), the flowtable and
# ctnetlink for kernel/nft's two variants; clsact and cls_bpf for the eBPF
# fast path (TCX links need 6.6). The guest has no modprobe to load them
# on demand, so init loads them all at boot; crc32c_generic is libcrc32c's
# soft dependency (it asks the crypto API for crc32c, which modinfo's
# depends= does not name).
modules=virtio_pci,virtio_net,crc32c_generic,nf_tables,nft_ct,nft_nat,nft_chain_nat,nft_fib_ipv4,nft_flow_offload,nf_flow_table_inet,nf_conntrack_netlink,sch_ingress,cls_bpf
go run ./image/arm64/mkinitramfs -modules "$tree/lib/modules/$kver" -load "$modules" \
  -init "$out/init" -relayd "$out/relayd" -config image/arm64/relayd.json -o "$out/initrd.gz"
cp "$kernel" "$out/vmlinuz"
echo "$kver" >"$out/kernel-version"
log "image in $out: vmlinuz ($(stat -c %s "$out/vmlinuz") bytes), initrd.gz ($(stat -c %s "$out/initrd.gz") bytes)"
