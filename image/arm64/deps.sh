#!/usr/bin/env bash
# Installs what make test-image needs beyond tests/deps.sh (which brings
# Prosody and the slixmpp requester): qemu-user-static (qemu-arm-static,
# qemu-aarch64-static for the cross unit tests) and qemu-system-arm (which
# provides qemu-system-aarch64 to boot the image). Idempotent; root.
# The arm64 kernel package itself is fetched by image/arm64/build.sh.
set -euo pipefail
bash "$(dirname "$0")/../../tests/apt-install.sh" qemu-user-static qemu-system-arm
