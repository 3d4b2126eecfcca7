#!/usr/bin/env bash
# Prints the URL of a reachable Redis for the test suite (MCP_RELAY_TEST_REDIS_URL): the one on
# 127.0.0.1:6379 if it answers PING, else a redis-server of our own on a free loopback port
# (no persistence, daemonized; it runs until the machine stops). Fails loudly when neither
# works: the tests that need Redis never pass by skipping.
#   export MCP_RELAY_TEST_REDIS_URL="$(bash scripts/redis-for-tests.sh)"
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "redis-for-tests: installing the Debian package redis-server" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
  fi
fi
command -v redis-cli >/dev/null 2>&1 || { echo "redis-for-tests: redis-cli not found" >&2; exit 1; }

if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null || true)" = "PONG" ]; then
  echo "redis://127.0.0.1:6379/0"
  exit 0
fi

# A free loopback port, as the kernel hands one out.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
dir="$(mktemp -d "${TMPDIR:-/tmp}/mcp-relay-redis.XXXXXX")"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >&2
for _ in $(seq 1 100); do
  if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)" = "PONG" ]; then
    echo "redis://127.0.0.1:$port/0"
    exit 0
  fi
  sleep 0.1
done
echo "redis-for-tests: redis-server on 127.0.0.1:$port did not answer; see $dir/redis.log" >&2
exit 1
