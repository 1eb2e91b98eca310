#!/usr/bin/env bash
# Runs a command (by default make test's suites) while two CPU-bound busy
# loops compete with it for the cores, the way a busy build machine or a
# router doing other work does: the suites must hold there too.
#
#   bash tests/loaded.sh                       # make test-unit fuzz test-e2e
#   bash tests/loaded.sh go test ./tests/e2e/  # any command
#
# LOAD_PROCS busy loops (default 2) run for at most LOAD_SECONDS (default
# 3600) each, and are stopped by PID when the command ends.
set -euo pipefail
cd "$(dirname "$0")/.."

procs=${LOAD_PROCS:-2}
limit=${LOAD_SECONDS:-3600}
if [ "$#" -eq 0 ]; then
	set -- make test-unit fuzz test-e2e
fi

load_pids=()
# Stop the busy loops by PID (timeout passes the signal on to its loop) and
# reap them, however the command ends.
trap 'kill "${load_pids[@]}" 2>/dev/null || true; wait' EXIT
trap 'exit 130' INT TERM

for _ in $(seq "$procs"); do
	timeout "$limit" sh -c 'while :; do :; done' &
	load_pids+=("$!")
done
echo "loaded.sh: $procs busy loops (pids ${load_pids[*]}, at most ${limit}s) on $(nproc) cores; running: $*" >&2

start=$(date +%s)
status=0
"$@" || status=$?
echo "loaded.sh: exit $status after $(($(date +%s) - start))s under load" >&2
exit "$status"
