#!/usr/bin/env bash
# The soak (issue 11): mixed real-SDK traffic of both MCP eras through a release mcp-relay for
# SOAK_SECS (default 600), with random client and upstream cuts, upstream and Redis restarts and
# a hostile upstream beside the good tools; then checks exactly-once delivery, RSS and
# descriptors back to baseline, and that every WARN/ERROR log line has an injected cause.
# Not part of CI. Loopback only; its own redis-server (never the one on 6379).
#   SOAK_SECS=60 bash scripts/soak.sh        # a smoke run
#   SOAK_LEGACY / SOAK_MODERN / SOAK_HOSTILE (workers: 8 / 8 / 2), SOAK_SEED, SOAK_OUT (log dir)
#   RSS_SLACK_MIB (8), RSS_SLACK_PCT (25), FD_SLACK (8), TASK_SLACK (2): the "back to baseline"
#   tolerances (why: scripts/soak/soak.py's docstring); CLOSE_WAIT_OK=1 only reports sockets the
#   relay still holds after their peer closed them, instead of failing
# Exit 0 when every check passed; the report is printed and written to $SOAK_OUT/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-peers.sh >&2
command -v redis-server >/dev/null 2>&1 || bash scripts/redis-for-tests.sh >/dev/null
cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/mcp-relay"
out="${SOAK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/mcp-relay-soak.XXXXXX")}"
exec .venv/bin/python scripts/soak/soak.py --relay-bin "$bin" --out "$out"
