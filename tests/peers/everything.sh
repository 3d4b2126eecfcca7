#!/bin/sh
# Start @modelcontextprotocol/server-everything (Streamable HTTP, endpoint /mcp) on 127.0.0.1 only.
# Usage: tests/peers/everything.sh [PORT]   (default 0 = ephemeral)
# Prints `LISTENING <port>` on stdout once bound (from loopback.cjs); the server's own logs follow.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PORT=${1:-${PORT:-0}} exec node --require "$here/loopback.cjs" \
  "$root/node_modules/@modelcontextprotocol/server-everything/dist/index.js" streamableHttp
