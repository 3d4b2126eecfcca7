#!/usr/bin/env bash
# The main job: mcp-relay in front of a real MCP server (@modelcontextprotocol/server-everything,
# Streamable HTTP) with the embedded in-memory store, and one real tool call through it made by
# the official Python SDK client. Everything binds to 127.0.0.1.
#   RELAY_PORT (default 8080)  ADMIN_PORT (default 50051)  METRICS_PORT (default 9464)
#   KEEP=1 leaves both running
set -euo pipefail
cd "$(dirname "$0")/.."
RELAY_PORT=${RELAY_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-50051}
METRICS_PORT=${METRICS_PORT:-9464}

bash scripts/setup-peers.sh
cargo build --release --locked --quiet

pids=()
cleanup() { [ "${KEEP:-0}" = 1 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

log=$(mktemp -d)
sh tests/peers/everything.sh 0 >"$log/everything.out" 2>"$log/everything.err" &
pids+=($!)
for _ in $(seq 100); do
  port=$(awk '/^LISTENING /{print $2; exit}' "$log/everything.out")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "server-everything did not start; see $log" >&2; exit 1; }
echo "server-everything (upstream) on http://127.0.0.1:$port/mcp"

./target/release/mcp-relay serve --upstream "http://127.0.0.1:$port/mcp" \
  --listen "127.0.0.1:$RELAY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --metrics-listen "127.0.0.1:$METRICS_PORT" 2>"$log/relay.err" &
pids+=($!)
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$RELAY_PORT") 2>/dev/null && break
  sleep 0.1
done
echo "mcp-relay on http://127.0.0.1:$RELAY_PORT/mcp (gRPC admin 127.0.0.1:$ADMIN_PORT, metrics http://127.0.0.1:$METRICS_PORT/metrics); logs in $log"

.venv/bin/python tests/peers/py_client.py --url "http://127.0.0.1:$RELAY_PORT/mcp" --mode legacy \
  --tool trigger-long-running-operation --steps 3 --delay-ms 200 |
  .venv/bin/python -c '
import json, sys
r = json.load(sys.stdin)
print("through mcp-relay: session", r["session_id"], "| progress", r["progress"], "| ping", r["ping_ok"])
print("tool result:", r["result_text"])'
