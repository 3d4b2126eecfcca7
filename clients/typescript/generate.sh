#!/usr/bin/env bash
# Regenerates the TypeScript client's code (src/gen/) from proto/ with buf and protoc-gen-es,
# both pinned in the root package.json (`npm ci` at the root installs them).
#   bash clients/typescript/generate.sh           regenerate in place
#   bash clients/typescript/generate.sh --check   fail if the committed code is stale
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export PATH="$root/node_modules/.bin:$PATH"
here="$root/clients/typescript"

generate() {
  (cd "$root" && buf generate proto --template "$here/buf.gen.yaml" --output "$1")
}

if [ "${1:-}" = "--check" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp"
  if ! diff -r "$tmp/src/gen" "$here/src/gen" >/dev/null; then
    diff -r -u "$tmp/src/gen" "$here/src/gen" | head -40 >&2 || true
    echo "clients/typescript: generated code is stale; run: bash clients/typescript/generate.sh" >&2
    exit 1
  fi
  echo "clients/typescript: generated code is current"
else
  rm -rf "$here/src/gen"
  generate "$here"
  echo "clients/typescript: regenerated src/gen/"
fi
