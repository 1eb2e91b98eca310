#!/bin/bash
# Installs the system packages needed by the end-to-end tests (tests/harness) and the demo:
# Prosody, ejabberd, python3-slixmpp (requester), iproute2 (network namespaces) and
# chromium (headless, drives the donor web page in tests/e2e/web_test.go) and
# qemu-user-static (tests/size runs the linux/arm v7 relayd under qemu-arm-static) and
# shellcheck (tests/packages lints the packaging scripts) and ethtool (the fast paths' tests turn
# checksum offload off so that the peers' kernels verify rewritten checksums) and coturn (its
# turnutils_uclient is the third-party TURN client of tests/e2e/turn_test.go), stun-server
# (Debian's stund, the two-address STUN server of tests/e2e/reachability_test.go) and
# miniupnpd-nftables (the home router of tests/e2e/portmap_test.go: UPnP IGD, NAT-PMP and PCP).
# Idempotent: apt is skipped when everything is already installed. Must run as root.
#
# Debian's postinst scripts may start system-wide prosody/ejabberd daemons (unless
# /usr/sbin/policy-rc.d denies it). Those would occupy the default XMPP ports, so any
# prosody/ejabberd process listening on 5222/5269/5280/5347/5443 is stopped afterwards.
set -euo pipefail

PKGS=(prosody ejabberd python3-slixmpp iproute2 nftables ethtool stun-client stun-server chromium qemu-user-static shellcheck coturn miniupnpd-nftables)
DEFAULT_PORTS=(5222 5269 5280 5347 5443)

log() { echo "deps.sh: $*"; }

bash "$(dirname "$0")/apt-install.sh" "${PKGS[@]}"

# Only coturn's client is used: a system turnserver its postinst may have started
# would hold the STUN/TURN ports, so it is stopped through its service script.
if command -v service >/dev/null 2>&1 && pgrep -x turnserver >/dev/null 2>&1; then
  log "service coturn stop"
  timeout 30 service coturn stop >/dev/null 2>&1 || true
fi

# Debian's stund starts only when /etc/default/stun says so; a system one would hold port
# 3478 on the host, so it is stopped like coturn (the tests start their own in namespaces).
if command -v service >/dev/null 2>&1 && pgrep -x stund >/dev/null 2>&1; then
  log "service stun stop"
  timeout 30 service stun stop >/dev/null 2>&1 || true
fi
# Only miniupnpd's binary is used (each test runs its own in a router namespace): a system
# miniupnpd its postinst may have started would map ports on this host's network.
if command -v service >/dev/null 2>&1 && pgrep -x miniupnpd >/dev/null 2>&1; then
  log "service miniupnpd stop"
  timeout 30 service miniupnpd stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled miniupnpd >/dev/null 2>&1; then
  log "systemctl disable miniupnpd"
  systemctl disable miniupnpd >/dev/null 2>&1 || true
fi

# pids of prosody/ejabberd processes listening on a default XMPP port (system daemons;
# the test harness always uses private, randomly chosen ports).
system_daemon_pids() {
  local filter port
  filter=""
  for port in "${DEFAULT_PORTS[@]}"; do
    filter="$filter${filter:+ or }sport = :$port"
  done
  { ss -Hltnp "( $filter )" 2>/dev/null || true; } | { grep -oE 'pid=[0-9]+' || true; } | cut -d= -f2 | sort -u |
    while read -r pid; do
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
      case "$cmd" in *prosody* | *ejabberd* | *beam*) echo "$pid" ;; esac
    done || true
}

pids=$(system_daemon_pids)
if [ -z "$pids" ]; then
  log "no system prosody/ejabberd daemon on default ports"
  exit 0
fi

cmdline() { tr '\0\n' '  ' <"/proc/$1/cmdline" 2>/dev/null | cut -c1-100; }

log "system XMPP daemons found (pids: $(echo $pids)); stopping them"
if command -v service >/dev/null 2>&1; then
  for pid in $pids; do
    case "$(cmdline "$pid")" in *prosody*) echo prosody ;; *) echo ejabberd ;; esac
  done | sort -u | while read -r svc; do
    log "service $svc stop"
    timeout 30 service "$svc" stop >/dev/null 2>&1 || true
  done
fi
for pid in $(system_daemon_pids); do
  log "SIGTERM $pid ($(cmdline "$pid"))"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do # up to 10 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "SIGKILL $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
done
if [ -n "$(system_daemon_pids)" ]; then
  echo "deps.sh: could not stop system XMPP daemons: $(system_daemon_pids)" >&2
  exit 1
fi
log "system XMPP daemons stopped"
