#!/usr/bin/env python3
"""A/B of two mcp-relay builds (or one build with and without a config) with the load
harness's JSON (and SSE) phases, paired run by run.

    scripts/bench-ab.py A_BIN B_BIN [--pairs N] [--label-a NAME] [--label-b NAME]
        [--config-b FILE] [--phases json,sse] [--harness PATH]

A_BIN and B_BIN are release `mcp-relay` binaries (e.g. an older tree's `target/release/mcp-relay`
built in a git worktree, and this tree's). Each pair runs the harness twice (`PHASES=json
ROUNDS=1`, `LOAD_RELAY_BIN` set to each binary; the order alternates from pair to pair), so
both builds see the same minutes of a shared, noisy machine. Each run's mcp-relay rows are
divided by the upstream reached directly in that same run; the report gives, per row, the
median over pairs of B's ratio ÷ A's ratio (requests/s and events/s: above 1 is B faster;
added p50 latency over direct: below 1 is B faster) and the per-pair values behind it.
`--config-b FILE` runs B with `LOAD_RELAY_CONFIG=FILE` (`--config`): the same build with a
feature switched on against it off.

Environment passed through (see benches/load/settings.rs): WRK_SECS, WRK_CONNS, JSON_ERAS,
LOAD_POOL (the B run only: an older build may lack `--route`). Needs what scripts/bench.sh
needs (wrk, nginx); the first run builds the bench in release.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

LINE = re.compile(
    r"^\s*(?P<label>(legacy|modern) `tools/list`, c=\d+) round \d+/\d+:\s+(?P<target>\S+)\s+"
    r"(?P<rps>[\d,]+) req/s\s+p50\s+(?P<p50>[\d,]+) µs\s+p99\s+(?P<p99>[\d,]+) µs"
)
# SSE rows: `legacy one stream: events/s round 1/1:    direct  3,012,345`.
RATE = re.compile(
    r"^\s*(?P<label>(legacy|modern) [^:]*: events/s) round \d+/\d+:\s+(?P<target>\S+)\s+"
    r"(?P<rate>[\d,]+)\s*$"
)


def run(binary: str, pool: bool, harness: str | None, config: str | None, phases: str) -> dict:
    env = dict(os.environ, PHASES=phases, ROUNDS="1", LOAD_RELAY_BIN=binary)
    env.setdefault("LOAD_VIA", "scripts/bench-ab.py")
    if not pool:
        env.pop("LOAD_POOL", None)
    env.pop("LOAD_RELAY_CONFIG", None)
    if config:
        env["LOAD_RELAY_CONFIG"] = config
    proc = subprocess.run(
        [harness, "--bench"] if harness else ["cargo", "bench", "--bench", "load"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"bench-ab: the harness failed with {binary}")
    rows: dict = {}
    for line in proc.stderr.splitlines():
        m = LINE.match(line)
        if m:
            rows.setdefault(m["label"], {})[m["target"]] = (
                float(m["rps"].replace(",", "")),
                float(m["p50"].replace(",", "")),
            )
        m = RATE.match(line)
        if m:
            rows.setdefault(m["label"], {})[m["target"]] = (float(m["rate"].replace(",", "")), None)
    out = {}
    for label, targets in rows.items():
        if "direct" in targets and "mcp-relay" in targets:
            (d_rps, d_p50), (r_rps, r_p50) = targets["direct"], targets["mcp-relay"]
            added = None if d_p50 is None else max(r_p50 - d_p50, 1.0)
            out[label] = (r_rps / d_rps, added, d_rps)
    if not out:
        sys.exit("bench-ab: no JSON rows in the harness's output")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--config-b", help="run B with LOAD_RELAY_CONFIG=FILE")
    ap.add_argument("--phases", default="json", help="harness phases (json, sse)")
    ap.add_argument(
        "--harness",
        help="a built load harness (target/release/deps/load-*), run instead of `cargo bench "
        "--bench load`, so editing the tree during the runs rebuilds nothing",
    )
    args = ap.parse_args()
    for b in (args.a, args.b):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench-ab: {b} is not an executable")
    pairs = []
    for i in range(args.pairs):
        order = [("a", args.a), ("b", args.b)]
        if i % 2:
            order.reverse()
        got = {}
        for which, binary in order:
            got[which] = run(
                binary,
                pool=which == "b",
                harness=args.harness,
                config=args.config_b if which == "b" else None,
                phases=args.phases,
            )
            print(f"pair {i + 1}/{args.pairs}: {which} done", file=sys.stderr, flush=True)
        pairs.append(got)

    labels = [lbl for lbl in pairs[0]["a"] if all(lbl in p["a"] and lbl in p["b"] for p in pairs)]
    print(f"# A/B, {args.pairs} pairs: A = {args.label_a}, B = {args.label_b}\n")
    print("| row | A ÷ direct (median) | B ÷ direct (median) | B/A per pair | B/A median |")
    print("|---|---:|---:|---|---:|")
    for label in labels:
        for k, name, unit in ((0, "rate", "ratio"), (1, "p50 added over direct", "µs")):
            a = [p["a"][label][k] for p in pairs]
            b = [p["b"][label][k] for p in pairs]
            if None in a or None in b:
                continue
            per = [bb / aa for aa, bb in zip(a, b)]
            fmt = (lambda v: f"{v:.3f}×") if k == 0 else (lambda v: f"{v:,.0f} µs")
            print(
                f"| {label}: {name} | {fmt(statistics.median(a))} | {fmt(statistics.median(b))} "
                f"| {' '.join(f'{v:.2f}' for v in per)} | {statistics.median(per):.3f} |"
            )
    direct = [p[w][lbl][2] for p in pairs for w in ("a", "b") for lbl in labels[:1]]
    print(
        f"\ndirect ({labels[0]}) across the runs: {min(direct):,.0f} to {max(direct):,.0f} requests/s"
    )


if __name__ == "__main__":
    main()
