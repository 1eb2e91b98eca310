#!/usr/bin/env bash
# Cross-builds relayd for every board the appliance targets and writes a
# size report (stripped and xz-compressed, as it lands on flash).
# Usage: image/cross.sh VERSION OUTDIR REPORT.md
set -euo pipefail
version=${1:?version}; out=${2:?outdir}; report=${3:?report}
mkdir -p "$out"
targets=(
  "arm 6 -"        # Raspberry Pi 1/Zero, older ARM routers
  "arm 7 -"        # Raspberry Pi 2+, most ARM routers
  "arm64 - -"      # Raspberry Pi 3/4/5 (64-bit), newer routers
  "mipsle - softfloat"  # MediaTek MT7621 and other little-endian MIPS routers
  "mips - softfloat"    # Atheros/QCA big-endian MIPS routers
  "amd64 - -"      # x86 boxes and VMs
)
{
  echo "# relayd binary sizes"
  echo
  echo "Built by \`make cross\` (image/cross.sh): \`CGO_ENABLED=0 go build -trimpath -ldflags='-s -w'\`, version $version."
  echo "\"xz\" is \`xz -9e\` of the binary: roughly what it costs in a squashfs-xz or compressed package on flash."
  echo
  echo "| target | stripped bytes | MiB | xz bytes | xz MiB |"
  echo "|---|---:|---:|---:|---:|"
} > "$report"
for t in "${targets[@]}"; do
  read -r arch arm mips <<<"$t"
  name="relayd-linux-$arch"
  env=(GOOS=linux GOARCH="$arch" CGO_ENABLED=0)
  if [ "$arm" != - ]; then env+=(GOARM="$arm"); name+="v$arm"; fi
  if [ "$mips" != - ]; then env+=(GOMIPS="$mips"); fi
  env "${env[@]}" go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out/$name" ./relayd
  size=$(stat -c %s "$out/$name")
  xzsize=$(xz -9e -T1 -c "$out/$name" | wc -c)
  awk -v n="$name" -v s="$size" -v x="$xzsize" 'BEGIN { printf "| %s | %d | %.2f | %d | %.2f |\n", n, s, s / 1048576, x, x / 1048576 }' >> "$report"
  echo "built $out/$name ($size bytes, xz $xzsize)"
done
