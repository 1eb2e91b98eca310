#!/usr/bin/env bash
# Installs what tests/appliance needs on the host: systemd-nspawn
# (systemd-container) to boot the test rootfs, mmdebstrap to build it once
# (cached), and nsenter (util-linux, always present). Idempotent.
set -euo pipefail
bash "$(dirname "$0")/../apt-install.sh" systemd-container mmdebstrap
