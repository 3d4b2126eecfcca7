#!/usr/bin/env bash
# Checks the control-plane API under proto/ with buf (npm @bufbuild/buf, from node_modules):
#   1. `buf lint` with the rules in buf.yaml;
#   2. no breaking change (buf's FILE rules: wire and generated-code compatibility) against the
#      previous main.
#
# "The previous main" in a fresh clone, where the main a push started from is not recorded:
#   - PROTO_BASE=<git ref>: compare the working tree's proto/ with that commit's (use it when
#     the base is known, e.g. the main a CI run's push started from);
#   - otherwise each of the last PROTO_DEPTH (default 30) first-parent commits that changed
#     proto/ is compared with its parent, so a breaking change anywhere in a multi-commit push
#     fails; plus uncommitted changes against HEAD. A commit whose parent is outside a shallow
#     clone is skipped, with a note.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
buf="$root/node_modules/.bin/buf"
[ -x "$buf" ] || { echo "proto/check.sh: $buf is missing: run npm ci" >&2; exit 1; }
# Mirrors buf.yaml's `breaking` section, for snapshots extracted without their buf.yaml.
config='{"version":"v2","breaking":{"use":["FILE"]}}'
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== buf lint"
"$buf" lint

# Extracts proto/ as of commit $1 into $tmp/$2; fails (status 1) if that commit has no proto/.
snapshot() {
  mkdir -p "$tmp/$2"
  git archive "$1" proto 2>/dev/null | tar -x -C "$tmp/$2" 2>/dev/null && [ -d "$tmp/$2/proto" ]
}

# buf breaking: proto/ in directory $1 against proto/ in directory $2, described as $3.
breaking() {
  echo "== buf breaking: $3"
  "$buf" breaking "$1/proto" --config "$config" --against "$2/proto" --against-config "$config"
}

checked=0
if [ -n "${PROTO_BASE:-}" ]; then
  snapshot "$PROTO_BASE" base || { echo "$PROTO_BASE has no proto/: nothing to compare"; exit 0; }
  breaking "$root" "$tmp/base" "working tree against $PROTO_BASE"
  exit 0
fi

depth="${PROTO_DEPTH:-30}"
range=HEAD
if git rev-parse -q --verify "HEAD~$depth" >/dev/null; then
  range="HEAD~$depth..HEAD"
fi
for commit in $(git rev-list --first-parent "$range" -- ':(glob)proto/**/*.proto'); do
  if ! git rev-parse -q --verify "$commit^" >/dev/null; then
    if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
      echo "== $(git log -1 --format='%h %s' "$commit"): parent outside this shallow clone; skipped"
    else
      echo "== $(git log -1 --format='%h %s' "$commit"): introduces proto/; nothing to compare"
    fi
    continue
  fi
  snapshot "$commit" "new-$commit" || continue
  if ! snapshot "$commit^" "old-$commit"; then
    echo "== $(git log -1 --format='%h %s' "$commit"): introduces proto/; nothing to compare"
    continue
  fi
  breaking "$tmp/new-$commit" "$tmp/old-$commit" "$(git log -1 --format='%h %s' "$commit")"
  checked=$((checked + 1))
done
if ! git diff --quiet HEAD -- ':(glob)proto/**/*.proto'; then
  snapshot HEAD head
  breaking "$root" "$tmp/head" "uncommitted changes against HEAD"
  checked=$((checked + 1))
fi
echo "proto/check.sh: lint clean, $checked comparison(s) without a breaking change"
