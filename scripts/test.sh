#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the real peers, then runs every unit and
# integration test (real MCP SDK servers and clients, grpcurl, over loopback sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-peers.sh
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests; run them first so the suite's summary closes the output.
  cargo test --locked --doc --quiet
  cargo nextest run --locked --no-fail-fast "$@"
else
  cargo test --locked --no-fail-fast "$@"
fi
