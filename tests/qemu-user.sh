#!/usr/bin/env bash
# Runs unit tests of the kernel layer and the daemon's packages as linux/arm v7
# and linux/arm64 binaries under qemu-user (qemu-arm-static,
# qemu-aarch64-static from Debian's qemu-user-static): the code paths of the
# boards' architectures (32-bit words, alignment, syscall numbers and struct
# layouts of x/sys/unix) on this amd64 machine.
#
# JNRELAY_QEMU_USER=1 tells tests that they run under qemu-user: the few that
# use what qemu-user does not emulate (socket options it does not translate)
# skip, naming it, when that call fails; natively the same failure fails.
# Every skip is printed with its reason. No -race: it does not exist there.
# Usage: tests/qemu-user.sh [PACKAGE...]   (default: ./kernel/... ./relayd/...)
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./kernel/... ./relayd/...)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
for target in "arm 7 qemu-arm-static" "arm64 - qemu-aarch64-static"; do
  read -r arch arm emu <<<"$target"
  if ! command -v "$emu" >/dev/null; then
    echo "qemu-user.sh: $emu not found (Debian package qemu-user-static)" >&2
    exit 1
  fi
  env=(GOOS=linux GOARCH="$arch" CGO_ENABLED=0 JNRELAY_QEMU_USER=1)
  name=linux/$arch
  if [ "$arm" != - ]; then env+=(GOARM="$arm"); name+=" v$arm"; fi
  start=$(date +%s)
  # -trimpath as in make cross and image/arm64/build.sh: the packages compiled
  # here are then reused from the build cache by those builds.
  # -timeout: every package takes seconds here; a hang (a forking Go
  # program under qemu-user can deadlock) fails within minutes, not ten.
  if env "${env[@]}" go test -trimpath -count=1 -v -timeout 3m -exec "$emu" "${pkgs[@]}" >"$log" 2>&1; then rc=0; else rc=$?; fi
  # A skip's reason is what the test logged after its "=== RUN"/"=== NAME"
  # line; its "--- SKIP: name" line may come later (subtests report with
  # their parent), so reasons are kept per test name.
  awk -v arch="$name" '
    /^=== (RUN|CONT|NAME) / { cur = $3; next }
    /^ *--- SKIP: / { n = $3; line = $0; sub(/^ */, "", line); printf "%s: %s:%s\n", arch, line, why[n]; next }
    /^ *--- / { next }
    /^    / && cur != "" { l = $0; sub(/^ +/, "", l); why[cur] = why[cur] " " l }
  ' "$log"
  # Package results (and top-level failures; the full log follows them).
  grep -E '^(ok|FAIL)\b|^--- FAIL|^panic:' "$log" | sed "s|^|$name: |" || true
  echo "qemu-user.sh: $name under $emu: exit $rc in $(($(date +%s) - start)) s"
  if [ "$rc" -ne 0 ]; then
    echo "qemu-user.sh: $name failed; full output:" >&2
    cat "$log" >&2
    status=1
  fi
done
exit $status
