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
# Usage: bench/wasm/run.sh [--secs N] [--threads N] [--rate N]
# Needs: cargo with the wasm32-wasip1 target, python3; Envoy from scripts/setup
# (/opt/meshwork/envoy-venv/bin/envoy) or ENVOY=path.
set -euo pipefail

SECS=10
THREADS=1
RATE=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
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
    2>>"$WORK/waypoint.log" & PIDS+=($!)
  echo $!
}
start_envoy() { # <plain|wasm> <port> <admin port>
  envoy_config "$2" "$3" "$1" > "$WORK/envoy-$1.yaml"
  "$ENVOY" -c "$WORK/envoy-$1.yaml" --concurrency "$THREADS" --log-level error --use-dynamic-base-id \
    2>>"$WORK/envoy.log" & PIDS+=($!)
  echo $!
}
W_PLAIN=$(start_waypoint "$WORK/plain.pb" 18181 18182 18183)
W_WASM=$(start_waypoint "$WORK/wasm.pb" 18191 18192 18193)
E_PLAIN=$(start_envoy plain 18281 18282)
E_WASM=$(start_envoy wasm 18291 18292)
for p in 18080 18181 18191 18281 18291; do wait_port 127.0.0.1 "$p"; done
wait_port 127.0.0.2 18080
sleep 1
for p in 18181 18191 18281 18291; do "$BIN/examples/loadgen" "127.0.0.1:$p" bench 4 1 >/dev/null; done

phase() { # <label> <conns> <rate>
  for target in "waypoint 18181 $W_PLAIN" "waypoint+wasm 18191 $W_WASM" "envoy 18281 $E_PLAIN" "envoy+wasm 18291 $E_WASM"; do
    local name port pid before after out
    read -r name port pid <<< "$target"
    before="$(cpu_secs "$pid")"
    out="$("$BIN/examples/loadgen" "127.0.0.1:$port" bench "$2" "$SECS" h1 "$3")"
    after="$(cpu_secs "$pid")"
    python3 - "$1" "$name" "$out" "$before" "$after" <<'PY'
import json, sys
label, name, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cpu = float(sys.argv[5]) - float(sys.argv[4])
per_k = f"{cpu / r['requests'] * 1000:.3f}" if r["requests"] else "—"
print(f"| {label} | {name} | {r['rps']} | {r['p50_us']} | {r['p99_us']} | {per_k} | {r['errors']} |")
PY
  done
}

echo "## header-only WasmPlugin: waypoint vs Envoy ($(nproc) cores, worker threads: $THREADS, ${SECS}s per phase)"
echo
echo "| phase | target | req/s | p50 µs | p99 µs | proxy CPU-s per 1k req | errors |"
echo "|---|---|---|---|---|---|---|"
phase "h1 fixed $RATE rps" 16 "$RATE"
phase "h1 max, 32 concurrent" 32 0
# Each plugin request went through the plugin: the waypoint's own count.
grep -c "WasmPlugin loaded" "$WORK/waypoint.log" >/dev/null || { echo "the waypoint did not load the plugin:" >&2; cat "$WORK/waypoint.log" >&2; exit 1; }
