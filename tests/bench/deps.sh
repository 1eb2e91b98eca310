#!/bin/bash
# Installs the system packages the side-by-side benchmark (tests/bench) uses:
#   gcc         builds the C reference relay (cref/relay.c)
#   util-linux  taskset, to pin the relay to core 0 and the generator to core 1
#   iproute2    network namespaces and veth pairs
#   rtpengine-daemon, coturn   the two outside contenders
# Idempotent: apt is skipped when dpkg-query shows everything installed. Must run
# as root.
#
# The Debian packages of rtpengine and coturn may start system-wide daemons (unless
# /usr/sbin/policy-rc.d denies it). The benchmark runs its own instances inside its
# own network namespaces, so system instances are not needed; they are stopped
# afterwards so they hold no CPU or ports during measurements.
set -euo pipefail

PKGS=(gcc util-linux iproute2 rtpengine-daemon coturn)

log() { echo "bench/deps.sh: $*"; }

bash "$(dirname "$0")/../apt-install.sh" "${PKGS[@]}"

# System daemons the packages may have started: stop them through their service
# scripts when possible, then by PID (only processes of exactly these programs
# that are not inside one of our benchmark namespaces).
for svc in coturn rtpengine-daemon ngcp-rtpengine-daemon; do
  if command -v service >/dev/null 2>&1; then
    timeout 30 service "$svc" stop >/dev/null 2>&1 || true
  fi
done
for prog in turnserver rtpengine; do
  for pid in $(pgrep -x "$prog" || true); do
    ns=$(ip netns identify "$pid" 2>/dev/null || true)
    case "$ns" in jnbench-*) continue ;; esac
    log "stopping system $prog (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
  done
done
log "done"
