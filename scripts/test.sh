#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real peers, finds (or starts) a Redis,
# then runs every unit and integration test (real MCP SDK servers and clients, grpcurl, Redis,
# over loopback sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-peers.sh
# The durable-session tests need a real Redis; they fail loudly without one, never skip.
MCP_RELAY_TEST_REDIS_URL="${MCP_RELAY_TEST_REDIS_URL:-$(bash scripts/redis-for-tests.sh)}"
export MCP_RELAY_TEST_REDIS_URL
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests; run them first so the suite's summary closes the output.
  cargo test --locked --doc --quiet
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
