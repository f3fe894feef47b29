#!/usr/bin/env python3
"""Markdown table of the medians of `peers` runs (bench/peers), one row per library.

    python3 scripts/peers_table.py RESULTS.jsonl

RESULTS.jsonl holds one JSON line per run, as `peers <library> <scenario>` prints it (other lines
are ignored). Each cell is the median across the rounds of that library x scenario; the last row
is daemonhost's median divided by raw's. Standard library only.
"""
import json
import statistics
import sys

LIBS = ["raw", "daemonhost", "daemonhost-base", "ractor", "kameo", "actix"]
# (scenario, field, column header, decimals)
COLUMNS = [
    ("ask-seq", "req_s", "ask-seq req/s", 0),
    ("ask-seq", "p50_us", "ask-seq p50 µs", 2),
    ("ask-seq", "p99_us", "ask-seq p99 µs", 2),
    ("ask-pipe", "req_s", "ask-pipe req/s", 0),
    ("ask-fan8", "req_s", "ask-fan8 req/s", 0),
    ("startup15", "p50_us", "startup15 p50 µs", 1),
    ("startup15", "min_us", "startup15 min µs", 1),
    ("idle10k", "ready_ms", "idle10k ready ms", 1),
    ("idle10k", "bytes_per_unit", "idle10k B/unit", 0),
    ("idle10k", "rss_kept_kib", "idle10k kept KiB", 0),
]


def load(path):
    runs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "lib" in r and "scenario" in r:
                runs.setdefault((r["lib"], r["scenario"]), []).append(r)
    return runs


def median(runs, lib, scenario, field):
    values = [r[field] for r in runs.get((lib, scenario), []) if isinstance(r.get(field), (int, float))]
    return statistics.median(values) if values else None


def fmt(x, decimals):
    if x is None:
        return "n/a"
    if decimals == 0:
        return f"{x:,.0f}"
    return f"{x:,.{decimals}f}"


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = load(sys.argv[1])
    if not runs:
        print("no runs found in " + sys.argv[1], file=sys.stderr)
        return 1
    rounds = max(len(v) for v in runs.values())
    header = ["library"] + [c[2] for c in COLUMNS]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|")
    for lib in LIBS:
        if not any(k[0] == lib for k in runs):
            continue
        cells = [fmt(median(runs, lib, s, f), d) for s, f, _, d in COLUMNS]
        print(f"| {lib} | " + " | ".join(cells) + " |")
    ratios = []
    for s, f, _, _ in COLUMNS:
        dh, raw = median(runs, "daemonhost", s, f), median(runs, "raw", s, f)
        ratios.append("n/a" if dh is None or raw is None or raw <= 0 else f"{dh / raw:.2f}×")
    print("| **daemonhost ÷ raw** | " + " | ".join(ratios) + " |")
    print()
    print(
        f"Medians of up to {rounds} round(s) per cell. req/s: higher is better; µs, ms, B/unit "
        "and KiB: lower is better (so a ratio above 1 is better for req/s, worse elsewhere)."
    )
    units = {r.get("units") for (_, s), v in runs.items() if s == "idle10k" for r in v}
    ns = {r.get("n") for (_, s), v in runs.items() if s.startswith("ask-") for r in v}
    print(f"Counts: ask requests {sorted(x for x in ns if x)}, idle units {sorted(x for x in units if x)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
