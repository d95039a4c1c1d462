#!/usr/bin/env bash
# The cost of a header-only WasmPlugin per request, waypoint vs Envoy, in one run.
#
# Four proxies in front of the same two local backends (bench/waypoint's setup and route):
# the waypoint and Envoy without a plugin, and each with the example `rewrite` plugin
# (examples/wasm-plugins, pluginConfig {"set": {"x-bench": "1"}}: one request header set,
# nothing else) — the same .wasm in both (Envoy: envoy.filters.http.wasm on V8). Each is
# driven by bench/waypoint's loadgen at a fixed rate and at its maximum; reported: p50/p99
# latency and the proxy's CPU seconds per 1,000 requests (from /proc).
#
# Usage: bench/wasm/run.sh [--secs N] [--threads N] [--rate N] [--rounds N]
#   Rounds are interleaved (each round measures every target once per phase, the order
#   rotated); the tables give medians and the min–max spread. KEEP_ROWS=file keeps the raw
#   measurements (JSON lines).
# Needs: cargo with the wasm32-wasip1 target, python3; Envoy from scripts/setup
# (/opt/meshwork/envoy-venv/bin/envoy) or ENVOY=path.
set -euo pipefail

SECS=10
THREADS=1
RATE=1000
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/meshwork-target}"
ENVOY="${ENVOY:-/opt/meshwork/envoy-venv/bin/envoy}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$ENVOY" ] || { echo "no Envoy at $ENVOY (scripts/setup installs it)" >&2; exit 1; }
cargo build -q --release -p meshwork-waypoint --bin waypoint --examples --manifest-path "$ROOT/Cargo.toml"
BIN="$CARGO_TARGET_DIR/release"
(cd "$ROOT/examples/wasm-plugins" && env -u CARGO_TARGET_DIR cargo build -q --release \
  --target wasm32-wasip1 --target-dir "$CARGO_TARGET_DIR/wasm-plugins")
WASM="$CARGO_TARGET_DIR/wasm-plugins/wasm32-wasip1/release/rewrite.wasm"
PLUGIN_CONFIG='{"set":{"x-bench":"1"}}'

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1:$2 did not open" >&2
  return 1
}
cpu_secs() {
  python3 - "$1" <<'PY'
import os, sys
stat = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"))
PY
}

# Envoy's config: bench/waypoint's, on <port> with admin <admin>, with or without the filter.
envoy_config() {
  python3 - "$ROOT/bench/waypoint/envoy.yaml" "$1" "$2" "$3" "$WASM" "$PLUGIN_CONFIG" <<'PY'
import sys
src, port, admin, wasm, path, conf = sys.argv[1:]
text = open(src).read().replace("port_value: 18083", f"port_value: {port}").replace("port_value: 18084", f"port_value: {admin}")
if wasm == "wasm":
    filt = f"""                http_filters:
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: plugin
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '{conf}'
                        vm_config:
                          runtime: envoy.wasm.runtime.v8
                          code: {{ local: {{ filename: {path} }} }}
"""
    text = text.replace("                http_filters:\n", filt, 1)
print(text)
PY
}

"$BIN/examples/bench_backend" 127.0.0.1:18080 1024 2>/dev/null & PIDS+=($!)
"$BIN/examples/bench_backend" 127.0.0.2:18080 1024 2>/dev/null & PIDS+=($!)
"$BIN/examples/bench_config" 18080 "$WORK/plain.pb" 2>/dev/null
"$BIN/examples/bench_config" 18080 "$WORK/wasm.pb" "file://$WASM" "$PLUGIN_CONFIG" 2>/dev/null

start_waypoint() { # <config> <http port> <admin port> <readiness port>
  "$BIN/waypoint" --worker-threads "$THREADS" --gateway bench/waypoint --insecure --upstream plain \
    --no-access-log --static-config "$1" --http-addr "127.0.0.1:$2" \
    --admin-addr "127.0.0.1:$3" --readiness-addr "127.0.0.1:$4" --metrics-addr off \
    >>"$WORK/waypoint.log" 2>&1 & PIDS+=($!)
  LAST=$!
}
start_envoy() { # <plain|wasm> <port> <admin port>
  envoy_config "$2" "$3" "$1" > "$WORK/envoy-$1.yaml"
  "$ENVOY" -c "$WORK/envoy-$1.yaml" --concurrency "$THREADS" --log-level error --use-dynamic-base-id \
    >>"$WORK/envoy.log" 2>&1 & PIDS+=($!)
  LAST=$!
}
# Not in $(…): the proxies must be children of this shell (cleanup) and not hold a pipe.
start_waypoint "$WORK/plain.pb" 18181 18182 18183; W_PLAIN=$LAST
start_waypoint "$WORK/wasm.pb" 18191 18192 18193; W_WASM=$LAST
start_envoy plain 18281 18282; E_PLAIN=$LAST
start_envoy wasm 18291 18292; E_WASM=$LAST
for p in 18080 18181 18191 18281 18291; do wait_port 127.0.0.1 "$p"; done
wait_port 127.0.0.2 18080
sleep 1
for p in 18181 18191 18281 18291; do "$BIN/examples/loadgen" "127.0.0.1:$p" bench 4 1 >/dev/null; done

# One measurement: appends a JSON line to $WORK/rows.jsonl.
measure() { # <round> <phase> <name> <port> <pid> <conns> <rate>
  local before after out
  before="$(cpu_secs "$5")"
  out="$("$BIN/examples/loadgen" "127.0.0.1:$4" bench "$6" "$SECS" h1 "$7")"
  after="$(cpu_secs "$5")"
  python3 - "$1" "$2" "$3" "$out" "$before" "$after" >> "$WORK/rows.jsonl" <<'PY'
import json, sys
rnd, phase, name, r = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
cpu = float(sys.argv[6]) - float(sys.argv[5])
r.update(round=int(rnd), phase=phase, target=name,
         cpu_per_k=(cpu / r["requests"] * 1000) if r["requests"] else None)
print(json.dumps(r))
PY
}

TARGETS=("waypoint 18181 $W_PLAIN" "waypoint+wasm 18191 $W_WASM" "envoy 18281 $E_PLAIN" "envoy+wasm 18291 $E_WASM")
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  # Interleaved: every target once per phase per round, the order rotated each round.
  for phase in "fixed $RATE" "max 0"; do
    read -r pname prate <<< "$phase"
    conns=16; [ "$pname" = max ] && conns=32
    for i in 0 1 2 3; do
      read -r name port pid <<< "${TARGETS[$(( (i + round - 1) % 4 ))]}"
      measure "$round" "$pname" "$name" "$port" "$pid" "$conns" "$prate"
    done
  done
  echo "round $round/$ROUNDS done (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
# The plugin ran: the waypoint logged loading it.
grep -q "WasmPlugin loaded" "$WORK/waypoint.log" || { echo "the waypoint did not load the plugin:" >&2; cat "$WORK/waypoint.log" >&2; exit 1; }
# …and Envoy created its V8 VM for the filter (its admin's wasm stats).
python3 - <<'PY' || { echo "Envoy did not run the plugin:" >&2; cat "$WORK/envoy.log" >&2; exit 1; }
import sys, urllib.request
stats = urllib.request.urlopen("http://127.0.0.1:18292/stats?filter=wasm", timeout=5).read().decode()
created = [l for l in stats.splitlines() if l.startswith("wasm.envoy.wasm.runtime.v8.created:")]
sys.exit(0 if created and int(created[0].split(":")[1]) >= 1 else 1)
PY
[ -n "${KEEP_ROWS:-}" ] && cp "$WORK/rows.jsonl" "$KEEP_ROWS"

python3 - "$WORK/rows.jsonl" "$(nproc)" "$THREADS" "$SECS" "$ROUNDS" "$RATE" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cores, threads, secs, rounds, rate, lb, la = sys.argv[2:]
med = lambda xs: st.median(xs)
def spread(xs, fmt):
    return f"{fmt(min(xs))}–{fmt(max(xs))}"
phases = [("fixed", f"h1 fixed {rate} rps, 16 slots"), ("max", "h1 max, 32 connections")]
targets = ["waypoint", "waypoint+wasm", "envoy", "envoy+wasm"]
print(f"## header-only WasmPlugin: waypoint vs Envoy ({cores} cores shared with other builds: "
      f"load average {lb} before, {la} after; worker threads: {threads}; {rounds} interleaved rounds of {secs} s per target and phase)")
print()
print("Medians over the rounds, [min–max] in brackets.")
print()
print("| phase | target | req/s | p50 µs | p99 µs | proxy CPU-ms per 1k req | errors |")
print("|---|---|---|---|---|---|---|")
i0 = lambda v: f"{v:.0f}"
f2 = lambda v: f"{v * 1000:.0f}"
for ph, label in phases:
    for t in targets:
        rs = [r for r in rows if r["phase"] == ph and r["target"] == t]
        col = lambda k: [float(r[k]) for r in rs if r[k] is not None]
        print(f"| {label} | {t} | {med(col('rps')):.0f} [{spread(col('rps'), i0)}] "
              f"| {med(col('p50_us')):.0f} [{spread(col('p50_us'), i0)}] "
              f"| {med(col('p99_us')):.0f} [{spread(col('p99_us'), i0)}] "
              f"| {med(col('cpu_per_k')) * 1000:.0f} [{spread(col('cpu_per_k'), f2)}] "
              f"| {sum(r['errors'] for r in rs)} |")
print()
print("The plugin's cost: (proxy with plugin) − (same proxy without), paired within each round; "
      "median [min–max] over the rounds, and waypoint ÷ Envoy of the medians.")
print()
print("| phase | measure | waypoint | Envoy | waypoint ÷ Envoy |")
print("|---|---|---|---|---|")
for ph, label in phases:
    for k, name, scale in [("p50_us", "p50 added, µs", 1), ("p99_us", "p99 added, µs", 1),
                           ("cpu_per_k", "CPU added per 1k req, ms", 1000)]:
        out = []
        for proxy in ["waypoint", "envoy"]:
            ds = []
            for rnd in range(1, int(rounds) + 1):
                get = lambda t: next(r for r in rows if r["phase"] == ph and r["target"] == t and r["round"] == rnd)
                a, b = get(proxy + "+wasm")[k], get(proxy)[k]
                if a is not None and b is not None:
                    ds.append((float(a) - float(b)) * scale)
            out.append(ds)
        mw, me = med(out[0]), med(out[1])
        ratio = f"{mw / me:.2f}" if me > 0 else "—"
        print(f"| {label} | {name} | {mw:.0f} [{min(out[0]):.0f}–{max(out[0]):.0f}] "
              f"| {me:.0f} [{min(out[1]):.0f}–{max(out[1]):.0f}] | {ratio} |")
PY
