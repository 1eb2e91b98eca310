#!/bin/bash
# Usage: apt-install.sh PACKAGE...
# Installs the Debian packages that are not installed yet (apt is skipped when
# dpkg-query shows all of them installed). Must run as root. Shared by
# tests/deps.sh and tests/bench/deps.sh.
set -euo pipefail
log() { echo "apt-install.sh: $*"; }
if [ "$(id -u)" -ne 0 ]; then
  echo "apt-install.sh: must run as root" >&2
  exit 1
fi
missing=()
for p in "$@"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  if [ "$status" = "install ok installed" ]; then
    log "$p already installed ($(dpkg-query -W -f='${Version}' "$p"))"
  else
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
else
  log "all packages present, skipping apt"
fi
