#!/usr/bin/env bash
# Stress: server→client requests on the standalone GET stream through mcp-relay (issue 11,
# item 1). The official Python SDK server's `ask` tool sends an elicitation and a sampling
# request without a related request id (so both go on the session's standalone GET stream); the
# official Python SDK client answers them, over SESSIONS short sessions with random timing,
# through mcp-relay with 2 data-plane threads, while LOAD busy loops keep the cores loaded.
# Prints `run=N ok=N lost=N errors=N` (and the driver's JSON); exits 1 if any was lost or failed.
#
#   scripts/stress-elicitation.sh [SESSIONS=2000] [CONCURRENCY=4] [LOAD=2] [SEED=n]
#       [PROFILE=release|debug] [BIN=path/to/mcp-relay] [WAIT_MS=n (session.standalone_stream_wait_ms)]
# Everything binds to 127.0.0.1; every process it starts is stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case $arg in
    *=*) export "${arg?}" ;;
    *) echo "usage: $0 [SESSIONS=n] [CONCURRENCY=n] [LOAD=n] [SEED=n] [PROFILE=..] [BIN=..] [WAIT_MS=n]" >&2; exit 2 ;;
  esac
done
SESSIONS=${SESSIONS:-2000}
CONCURRENCY=${CONCURRENCY:-4}
LOAD=${LOAD:-2}
PROFILE=${PROFILE:-release}

bash scripts/setup-peers.sh >/dev/null
if [ -z "${BIN:-}" ]; then
  if [ "$PROFILE" = release ]; then
    cargo build --release --locked --quiet --bin mcp-relay
  else
    cargo build --locked --quiet --bin mcp-relay
  fi
  BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/mcp-relay
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
log=$(mktemp -d)
# A long keep-alive: a pooled upstream connection reused just as uvicorn (default 5 s) closes it
# fails its request, a separate issue this stress does not measure.
.venv/bin/python tests/peers/py_server.py --port 0 --keep-alive-s 120 >"$log/server.out" 2>"$log/server.err" &
pids+=($!)
for _ in $(seq 300); do
  port=$(awk '/^LISTENING /{print $2; exit}' "$log/server.out")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "py_server did not start; see $log" >&2; exit 1; }

relay_port=$(free_port)
admin_port=$(free_port)
env ${WAIT_MS:+MCP_RELAY_SESSION__STANDALONE_STREAM_WAIT_MS=$WAIT_MS} \
  "$BIN" serve --upstream "http://127.0.0.1:$port/mcp" --listen "127.0.0.1:$relay_port" \
  --admin-listen "127.0.0.1:$admin_port" --no-metrics --threads 2 2>"$log/relay.err" &
pids+=($!)
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$relay_port") 2>/dev/null && break
  sleep 0.1
done

for _ in $(seq "$LOAD"); do
  yes >/dev/null &
  pids+=($!)
done

echo "stress: $SESSIONS sessions, concurrency $CONCURRENCY, $LOAD busy loops, relay $BIN (logs in $log)" >&2
out=$(.venv/bin/python tests/peers/py_stress_elicitation.py --url "http://127.0.0.1:$relay_port/mcp" \
  --sessions "$SESSIONS" --concurrency "$CONCURRENCY" ${SEED:+--seed "$SEED"})
echo "$out"
echo "$out" | .venv/bin/python -c '
import json, sys
r = json.load(sys.stdin)
print("run={run} ok={ok} lost={lost} errors={errors} seed={seed}".format(**r))
sys.exit(1 if r["lost"] or r["errors"] else 0)'
