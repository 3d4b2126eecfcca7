#!/usr/bin/env bash
# The load harness (issue 7): the same fast upstream reached directly, through mcp-relay and
# through nginx, on loopback — JSON-RPC request rate and latency (wrk), SSE events/s through one
# stream and across 1,000, 10,000 held streams (memory, tasks), memory per idle session.
#
#   scripts/bench.sh             # full size: about 6 minutes on 2 cores (ROUNDS=3), after the build
#   QUICK=1 scripts/bench.sh     # smoke test: about a minute
#
# Installs nginx-light and wrk (Debian/Ubuntu, apt-get; sudo only when not root) if missing,
# then runs `cargo bench --bench load`, which builds the release mcp-relay and prints the
# results; they are also written to target/bench/load.md. Every size, duration and round count
# is an environment variable: see benches/load/settings.rs (ROUNDS, WRK_SECS, EVENTS, STREAMS,
# HOLD_STREAMS, SESSIONS, PHASES=json,sse,fanout,hold,sessions, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "bench.sh: please install ${missing[*]} (nginx and wrk); no apt-get here" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    echo "bench.sh: installing ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk
fi

export LOAD_VIA="scripts/bench.sh"
exec cargo bench --bench load
