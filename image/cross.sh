#!/usr/bin/env bash
# Cross-builds relayd for every board the appliance targets and writes a
# size report (stripped and xz-compressed, as it lands on flash).
# Usage: image/cross.sh VERSION OUTDIR REPORT.md
set -euo pipefail
version=${1:?version}; out=${2:?outdir}; report=${3:?report}
mkdir -p "$out"
# The fourth field is the build tags. Small-flash boards (32-bit ARM and
# MIPS routers, 8-16 MB of flash) are built without the in-kernel fast
# path: its nftables client library would take them over their size budget
# (tests/size), and the hardened units do not grant CAP_NET_ADMIN anyway.
# The protobuf runtime (client_golang's exposition types; it runs only when
# /metrics is scraped) is compiled without inlining: 196 KB less on arm v7
# for no cost on any hot path. tests/size builds with the same flags.
gcflags='google.golang.org/protobuf/...=-l'
targets=(
  "arm 6 - nofastpath"        # Raspberry Pi 1/Zero, older ARM routers
  "arm 7 - nofastpath"        # Raspberry Pi 2+, most ARM routers
  "arm64 - - -"               # Raspberry Pi 3/4/5 (64-bit), newer routers
  "mipsle - softfloat nofastpath"  # MediaTek MT7621 and other little-endian MIPS routers
  "mips - softfloat nofastpath"    # Atheros/QCA big-endian MIPS routers
  "amd64 - - -"               # x86 boxes and VMs
)
{
  echo "# relayd binary sizes"
  echo
  echo "Built by \`make cross\` (image/cross.sh): \`CGO_ENABLED=0 go build -trimpath -gcflags='$gcflags' -ldflags='-s -w'\`, version $version (the protobuf runtime, used only by /metrics scrapes, without inlining)."
  echo "\"xz\" is \`xz -9e\` of the binary: roughly what it costs in a squashfs-xz or compressed package on flash."
  echo "32-bit ARM and MIPS are built with \`-tags nofastpath\` (no nftables fast path: its library would not fit their budget; the eBPF fast path is in every build);"
  echo "budgets, enforced by tests/size: 11 MiB for arm v6/v7, 12 MiB for arm64 and amd64, 12.5 MiB for MIPS, 3.5 MiB xz (4 MiB for amd64)."
  echo
  echo "| target | stripped bytes | MiB | xz bytes | xz MiB |"
  echo "|---|---:|---:|---:|---:|"
} > "$report"
for t in "${targets[@]}"; do
  read -r arch arm mips tags <<<"$t"
  name="relayd-linux-$arch"
  env=(GOOS=linux GOARCH="$arch" CGO_ENABLED=0)
  if [ "$arm" != - ]; then env+=(GOARM="$arm"); name+="v$arm"; fi
  if [ "$mips" != - ]; then env+=(GOMIPS="$mips"); fi
  tagflag=()
  if [ "$tags" != - ]; then tagflag=(-tags "$tags"); fi
  env "${env[@]}" go build -trimpath "${tagflag[@]}" -gcflags "$gcflags" -ldflags "-s -w -X main.version=$version" -o "$out/$name" ./relayd
  size=$(stat -c %s "$out/$name")
  xzsize=$(xz -9e -T1 -c "$out/$name" | wc -c)
  awk -v n="$name" -v s="$size" -v x="$xzsize" 'BEGIN { printf "| %s | %d | %.2f | %d | %.2f |\n", n, s, s / 1048576, x, x / 1048576 }' >> "$report"
  echo "built $out/$name ($size bytes, xz $xzsize)"
done
