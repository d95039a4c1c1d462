#!/usr/bin/env python3
"""Prints bench/compare/run.sh's results (round, mode, metric, value rows) as the table of
issue #21: medians over rounds, the worst round, and the per-round figures.

    table.py RESULTS.tsv [THREADS]
"""
import statistics
import sys
from collections import defaultdict

# metric, label, higher is better
METRICS = [
    ("bulk1_gbps", "bulk, 1 stream (Gbit/s)", True),
    ("bulk4_gbps", "bulk, 4 streams (Gbit/s)", True),
    ("rr_tps", "64 B request/response, transactions/s", True),
    ("rr_p99_us", "64 B request/response p99 (µs)", False),
    ("crr_cps", "new connections/s (4 workers)", True),
    ("http_p99_us", "HTTP/1.1 at 1,000 rps, p99 (µs)", False),
    ("cpu_s_per_1k_http", "CPU-s of both ztunnels per 1,000 HTTP requests", False),
    ("cpu_s_per_gb", "CPU-s of both ztunnels per GB, 1 stream", False),
    ("idle_rss_mib", "idle RSS per ztunnel (MiB)", False),
    ("load1", "load average (1 min) at the start of each run", False),
]
MODES = ["direct", "istio", "meshwork", "meshwork_b", "meshwork_c"]


def fmt(v):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def main():
    rows = defaultdict(lambda: defaultdict(dict))  # metric -> mode -> round -> value
    for line in open(sys.argv[1]):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 4 or parts[3] == "":
            continue
        r, mode, metric, value = parts
        rows[metric][mode][int(r)] = float(value)
    threads = sys.argv[2] if len(sys.argv) > 2 else "?"
    present = [m for m in METRICS if m[0] in rows]
    modes = [m for m in MODES if any(m in rows[k] for k, _, _ in present)]
    rounds = sorted({r for k in rows for m in rows[k] for r in rows[k][m]})

    def median(metric, mode):
        vals = list(rows[metric][mode].values())
        return statistics.median(vals) if vals else None

    def worst(metric, mode, higher):
        vals = list(rows[metric][mode].values())
        if not vals:
            return None
        return min(vals) if higher else max(vals)

    head = f"| measure ({threads} worker threads each; median of {len(rounds)} rounds, worst round in brackets) |"
    head += "".join(f" {m} |" for m in modes)
    if "istio" in modes and "meshwork" in modes:
        head += " Meshwork ÷ Istio |"
    for v in ("meshwork_b", "meshwork_c"):
        if v in modes and "meshwork" in modes:
            head += f" {v[-1].upper()} ÷ A |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for key, label, higher in present:
        line = f"| {label} |"
        for m in modes:
            med, w = median(key, m), worst(key, m, higher)
            line += f" {fmt(med)}" + (f" ({fmt(w)})" if med is not None and key != "load1" else "") + " |"
        if "istio" in modes and "meshwork" in modes:
            i, mw = median(key, "istio"), median(key, "meshwork")
            line += f" {mw / i:.2f} |" if i and mw is not None and key != "load1" else " |"
        for v in ("meshwork_b", "meshwork_c"):
            if v in modes and "meshwork" in modes:
                a, b = median(key, "meshwork"), median(key, v)
                line += f" {b / a:.2f} |" if a and b is not None and key != "load1" else " |"
        print(line)

    print()
    print("per round:")
    print("metric\tmode\t" + "\t".join(f"r{r}" for r in rounds))
    for key, _, _ in present:
        for m in modes:
            if m in rows[key]:
                vals = [fmt(rows[key][m].get(r)) for r in rounds]
                print(f"{key}\t{m}\t" + "\t".join(vals))


if __name__ == "__main__":
    main()
