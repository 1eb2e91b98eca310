#!/usr/bin/env bash
# Cross-builds relayd for every board the appliance targets and writes a
# size report (stripped and xz-compressed, as it lands on flash).
# Usage: image/cross.sh VERSION OUTDIR REPORT.md
set -euo pipefail
version=${1:?version}; out=${2:?outdir}; report=${3:?report}
mkdir -p "$out"
# The fourth field is the build tags ("-": none). Every target is built
# with every feature, the nftables fast path included: fw4's nftables is
# what OpenWrt routers run, and the 32-bit builds fit their budgets with it
# (tests/size). -tags nofastpath still leaves the nftables library out, for
# a custom build that must be smaller (about 0.4 MiB on 32-bit ARM).
targets=(
  "arm 6 - -"        # Raspberry Pi 1/Zero, older ARM routers
  "arm 7 - -"        # Raspberry Pi 2+, most ARM routers
  "arm64 - - -"               # Raspberry Pi 3/4/5 (64-bit), newer routers
  "mipsle - softfloat -"  # MediaTek MT7621 and other little-endian MIPS routers
  "mips - softfloat -"    # Atheros/QCA big-endian MIPS routers
  "amd64 - - -"               # x86 boxes and VMs
)
{
  echo "# relayd binary sizes"
  echo
  echo "Built by \`make cross\` (image/cross.sh): \`CGO_ENABLED=0 go build -trimpath -ldflags='-s -w'\`, version $version."
  echo "\"xz\" is \`xz -9e\` of the binary: roughly what it costs in a squashfs-xz or compressed package on flash."
  echo "Every target has every feature: built-in TURN, and both fast paths (eBPF and nftables)."
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
  env "${env[@]}" go build -trimpath "${tagflag[@]}" -ldflags "-s -w -X main.version=$version" -o "$out/$name" ./relayd
  size=$(stat -c %s "$out/$name")
  xzsize=$(xz -9e -T1 -c "$out/$name" | wc -c)
  awk -v n="$name" -v s="$size" -v x="$xzsize" 'BEGIN { printf "| %s | %d | %.2f | %d | %.2f |\n", n, s, s / 1048576, x, x / 1048576 }' >> "$report"
  echo "built $out/$name ($size bytes, xz $xzsize)"
done
# Why the binaries are this size now: a fixed note, kept with the generator
# so that docs/size.md stays whole when make cross rewrites it.
cat >>"$report" <<'EOF'

## Room for TURN

Built-in TURN (pion/turn, about 393 KB on arm v7) and the nftables fast path
on 32-bit boards did not fit: arm v7 was at 11,403,426 of its 11,534,336
bytes. Two changes made room.

relayd/metrics writes the Prometheus text format itself instead of through
client_golang, whose registry builds protobuf messages for every scrape: the
protobuf runtime (about 660 KB of symbols on arm v7), client_golang (about
220 KB), expvar, a gzip writer, procfs' regular expressions, and their type
metadata and pclntab left the binary. Every relayd_* metric keeps its name,
labels, HELP and TYPE; go_* comes from runtime/metrics and process_* from
/proc/self, under the same names. Written by hand, go_* and process_* cost
64 KB on arm v7; github.com/VictoriaMetrics/metrics v1.45.0's process
metrics, measured in their place, cost 128 KB, name the memory limit
go_memlimit_bytes and read runtime.ReadMemStats, which stops the world. A
scrape also got cheaper: about 1.3 ms, 248 KB and 2,039 allocations before,
70 us, 36 KB and 44 after (BenchmarkScrape on amd64). The protobuf
`-gcflags` these builds used went with it.

The STUN server and the public-address probe moved from pion/stun v3 to v4,
the version pion/turn brings, so the binary will hold one STUN library (the
move alone does not change the size).

Built-in TURN then went in: pion/turn v5 over UDP and TCP, and TURN over
TLS (crypto/tls was already linked for client accounts; the TLS server side
and the listener's handshake bounds are what is new). The table above this
section is the binary with all of it: arm v7 at 10,027,170 bytes, +524,288
over the room-making figure below, and 1,507,166 bytes under its budget.

The nftables fast path then went into the 32-bit builds as well, the
google/nftables library as it is: fw4's nftables is what OpenWrt routers
run. It adds 393,216 bytes on arm v7 (10,027,170 to 10,420,386) and 458,752
on MIPS (11,403,457 to 11,862,209), within every budget. A hand-written
encoder of the few messages relayd sends would save most of that, but the
room is there, and the library is the one its users fix. The table at the
top of this page has it in every build.

Then came the offload broker (+65,536 bytes on arm v7, to 10,485,922),
dual-stack TURN, the TURN allocation listing and the relay directory on
XMPP publish-subscribe: 10,748,066 bytes on arm v7 together, 786,270 under
its budget; MIPS 12,255,425, 851,775 under its own.

Port mapping on the home router (relayd/portmap: PCP written here, NAT-PMP
by github.com/jackpal/go-nat-pmp, UPnP IGD by github.com/huin/goupnp's
`soap` package alone) adds 131,072 bytes on arm v7 (to 10,879,138, 655,198
under its budget) and 196,608 on MIPS (to 12,452,033). About 53 KB of it
is code (portmap 40 KB, goupnp/soap 7 KB, go-nat-pmp 4 KB); the rest is
type data and tables, and the binary grows in 64 KiB steps. goupnp's
generated IGD clients and its discovery are not linked: they fetch device
descriptions through a process-wide HTTP client with no size bound, and
pull in golang.org/x/net/html/charset. The default gateway is read from
/proc/net/route: netlink's route calls cost another 131,072 bytes on arm
v7.

Then, all merged together: the nftables flowtable variant (kernel/nft:
the flowtable, conntrack NAT rules and a small ctnetlink client on the
netlink library google/nftables already links; +65,536 bytes on arm v6 and
MIPS alone), port mapping, the reachability self-test, the usage history
and charts' API, steered ports' in-kernel shield and the directory's
health ranking: arm v7 at 11,141,282 bytes, 393,054 under its budget;
MIPS at 12,714,177, 393,023 under its own; xz at most 3.46 MiB (amd64).
Then the conntrack dump filter, the flowtable legs' entries made at
install and the br_netfilter check: +65,536 bytes on MIPS (12,779,713,
327,487 under its budget), +28,672 on amd64, arm v6/v7 unchanged.

Before and after, as this script built them (xz moves by a few hundred bytes
with the version string):

| target | stripped before | stripped after | xz before | xz after |
|---|---:|---:|---:|---:|
| relayd-linux-armv6 | 11403426 | 9502882 | 3191756 | 2769280 |
| relayd-linux-armv7 | 11403426 | 9502882 | 3186020 | 2763816 |
| relayd-linux-arm64 | 11468962 | 9568418 | 3177472 | 2762368 |
| relayd-linux-mipsle | 12976321 | 10813633 | 2971496 | 2595468 |
| relayd-linux-mips | 12976321 | 10813633 | 2911472 | 2544548 |
| relayd-linux-amd64 | 12370082 | 10301602 | 3729116 | 3240652 |
EOF
