#!/usr/bin/env bash
# Same-run comparison of Istio's ztunnel and Meshwork's ztunnel (issue #21); root only.
#
#   bench/compare/run.sh [--rounds N] [--secs S] [--threads T] [--modes direct,istio,meshwork]
#
# A/B of Meshwork variants in the same run: --modes meshwork,meshwork_b,meshwork_c with
# MESHWORK{,_B,_C}_ARGS (extra ztunnel flags), MESHWORK{,_B,_C}_ENV (extra VAR=value
# words) and/or MESHWORK_{B,C}_ZTUNNEL (another binary). COMPARE_BULK_ONLY=1 runs the
# bulk phases only.
#
# Topology (created here, removed on exit): two network namespaces, node A (10.77.0.1)
# and node B (10.77.0.2), joined by a veth pair. The client tools run in node A's
# namespace, the servers (iperf3 -s, mwload serve) in node B's. For a mesh, node A's
# OUTPUT chain REDIRECTs the client's connections to B's test ports to :15001, the same
# rule for both meshes; node A's ztunnel carries them over HBONE/mTLS to node B's ztunnel
# (:15008), which connects to the server. Meshwork's control plane (config + CA, TLS
# 10.77.0.1:15012) serves both meshes' certificates; Istio's ztunnel runs in dedicated
# mode (one workload per node, LOCAL_XDS_PATH), Meshwork's with its node's xDS.
#
# Each round runs every mode (order rotated per round), each with fresh ztunnels
# (T worker threads each): idle RSS, iperf3 1 and 4 streams, mwload rr (64 B TCP_RR),
# crr (TCP_CRR, 4 workers), http (HTTP/1.1 open loop, 1,000 req/s on 10 connections),
# with CPU-s (utime+stime of both ztunnels, /proc/<pid>/stat) over the bulk and HTTP
# phases. bench/compare/table.py prints per-round figures, medians and worst rounds.
#
# COMPARE_PROFILE=perf|strace records both ztunnels over each 1-stream bulk phase
# (perf record / strace -c) into the work directory (kept with COMPARE_KEEP=1).
#
# Binaries: ISTIO_ZTUNNEL (default: /var/cache/istio-ztunnel/ztunnel, built by
# scripts/interop/build-istio-ztunnel), MESHWORK_ZTUNNEL and CONTROLPLANE (default:
# release builds under $CARGO_TARGET_DIR, built when missing). Every traffic phase is
# bounded by --secs; all traffic stays inside the two namespaces.
set -euo pipefail

rounds=5
secs=5
threads=2
modes="direct,istio,meshwork"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --secs) secs="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $EUID -eq 0 ]] || { echo "run as root (network namespaces, iptables)" >&2; exit 2; }
((rounds >= 1 && rounds <= 50 && secs >= 1 && secs <= 120)) || { echo "bad --rounds/--secs" >&2; exit 2; }

here="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
istio="${ISTIO_ZTUNNEL:-/var/cache/istio-ztunnel/ztunnel}"
mw="${MESHWORK_ZTUNNEL:-$CARGO_TARGET_DIR/release/ztunnel}"
cp_bin="${CONTROLPLANE:-$CARGO_TARGET_DIR/release/controlplane}"
# A/B: mode meshwork_b runs MESHWORK_B_ZTUNNEL (default: the same binary) with
# MESHWORK_B_ARGS; mode meshwork adds MESHWORK_ARGS.
mw_b="${MESHWORK_B_ZTUNNEL:-$mw}"
mw_c="${MESHWORK_C_ZTUNNEL:-$mw}"
for t in iperf3 python3 rustc iptables; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install iperf3)" >&2; exit 2; }
done
if [[ ",$modes," == *,istio,* && ! -x "$istio" ]]; then
  echo "no Istio ztunnel at $istio (scripts/interop/build-istio-ztunnel)" >&2
  exit 2
fi
if [[ -z "${MESHWORK_ZTUNNEL:-}" || -z "${CONTROLPLANE:-}" ]]; then
  (cd "$here" && cargo build -q --release -p meshwork-ztunnel --bin ztunnel \
    -p meshwork-controlplane --bin controlplane)
fi

work="$(mktemp -d /tmp/mw-compare.XXXXXX)"
out="${COMPARE_OUT:-$work/results.tsv}"
rustc -O --edition 2021 "$here/bench/compare/mwload.rs" -o "$work/mwload"
load="$work/mwload"

A="mwcmp-a-$$"
B="mwcmp-b-$$"
IPA=10.77.0.1
IPB=10.77.0.2
IPERF_PORT=5201
ECHO_PORT=7001
HTTP_PORT=7002
pids=()
zt_pids=()

stop_ztunnels() {
  for p in "${zt_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${zt_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  zt_pids=()
}
cleanup() {
  stop_ztunnels
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # Anything else still running in the namespaces this script made.
  for ns in "$A" "$B"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  [[ -n "${COMPARE_KEEP:-}" ]] || rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$A"
ip netns add "$B"
ip link add mwcmp-a$$ netns "$A" type veth peer name mwcmp-b$$ netns "$B"
ip -n "$A" link set lo up
ip -n "$B" link set lo up
ip -n "$A" addr add "$IPA/24" dev mwcmp-a$$
ip -n "$B" addr add "$IPB/24" dev mwcmp-b$$
ip -n "$A" link set mwcmp-a$$ up
ip -n "$B" link set mwcmp-b$$ up
ina() { ip netns exec "$A" "$@"; } # foreground only (see the servers below)
inb() { ip netns exec "$B" "$@"; }

# Control plane: two ambient pods, client on node-a, server on node-b.
mkdir -p "$work/config" "$work/ca"
cat >"$work/config/mesh.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: bench
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench}
spec: {nodeName: node-a, serviceAccountName: client, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: $IPA}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: bench}
spec: {nodeName: node-b, serviceAccountName: server, containers: [{name: app, image: app}]}
status: {phase: Running, podIP: $IPB}
EOF
ip netns exec "$A" "$cp_bin" --config-dir "$work/config" --ca-dir "$work/ca" \
  --grpc-addr off --grpc-tls-addr "$IPA:15012" --serving-san "$IPA" \
  --admin-addr 127.0.0.1:15014 >"$work/cp.out" 2>"$work/cp.log" &
pids+=($!)
for _ in $(seq 300); do grep -q "controlplane ready" "$work/cp.out" && break; sleep 0.1; done
grep -q "controlplane ready" "$work/cp.out" || { cat "$work/cp.log" >&2; exit 1; }
tok_a="$("$cp_bin" --ca-dir "$work/ca" token --node node-a)"
tok_b="$("$cp_bin" --ca-dir "$work/ca" token --node node-b)"
root="$work/ca/ca-root.pem"

cat >"$work/istio-local.yaml" <<EOF
workloads:
- uid: Kubernetes//Pod/bench/client
  name: client
  namespace: bench
  serviceAccount: client
  trustDomain: cluster.local
  workloadIps: ["$IPA"]
  protocol: HBONE
  node: node-a
  network: ""
  services: {}
- uid: Kubernetes//Pod/bench/server
  name: server
  namespace: bench
  serviceAccount: server
  trustDomain: cluster.local
  workloadIps: ["$IPB"]
  protocol: HBONE
  node: node-b
  network: ""
  services: {}
policies: []
services: []
EOF

# Servers on node B (run for the whole benchmark). Background processes are started with
# `ip netns exec` itself, never through a shell function: that would fork a subshell, and
# killing $! would leave the process running.
ip netns exec "$B" iperf3 -s -p "$IPERF_PORT" >"$work/iperf3-server.log" 2>&1 &
pids+=($!)
ip netns exec "$B" "$load" serve "$ECHO_PORT" "$HTTP_PORT" >"$work/mwload-server.log" 2>&1 &
pids+=($!)
sleep 0.5

capture() { # $1: -A or -D
  ina iptables -t nat "$1" OUTPUT -p tcp -d "$IPB" -m multiport \
    --dports "$IPERF_PORT,$ECHO_PORT,$HTTP_PORT" -j REDIRECT --to-ports 15001
}

# The process of a netns command started in the background: `ip netns exec` and `env`
# exec in place, so $! is the ztunnel itself; checked by its name.
check_pid() {
  [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == ztunnel* ]] || {
    echo "pid $1 is not a ztunnel" >&2
    exit 1
  }
}

start_istio() { # node ns workload token
  local node="$1" ns="$2" wl="$3" tok="$4"
  ip netns exec "$ns" env -i PATH="$PATH" RUST_LOG=info \
    XDS_ADDRESS="" LOCAL_XDS_PATH="$work/istio-local.yaml" \
    CA_ADDRESS="https://$IPA:15012" CA_ROOT_CA="$root" AUTH_TOKEN="$tok" \
    NODE_NAME="$node" CLUSTER_ID=Kubernetes PROXY_MODE=dedicated \
    PROXY_WORKLOAD_INFO="bench/$wl/$wl" ENABLE_ORIG_SRC=false \
    ZTUNNEL_WORKER_THREADS="$threads" \
    "$istio" >>"$work/istio-$node.log" 2>&1 &
  zt_pids+=($!)
}

start_meshwork() { # node ns token binary extra-args extra-env
  local node="$1" ns="$2" tok="$3" bin="$4" extra="$5" xenv="$6"
  # shellcheck disable=SC2086 # extra, xenv: words
  ip netns exec "$ns" env -i PATH="$PATH" RUST_LOG=info $xenv "$bin" --node "$node" \
    --control-plane "https://$IPA:15012" --control-plane-root "$root" \
    --node-token "$tok" --worker-threads "$threads" \
    --outbound-addr 0.0.0.0:15001 --readiness-addr 127.0.0.1:15021 \
    --metrics-addr 127.0.0.1:15020 --admin-addr 127.0.0.1:15000 \
    $extra >>"$work/meshwork-$node.log" 2>&1 &
  zt_pids+=($!)
}

wait_ready() { # ns
  for _ in $(seq 200); do
    ip netns exec "$1" python3 - <<'EOF' 2>/dev/null && return 0
import socket, sys
s = socket.create_connection(("127.0.0.1", 15021), timeout=1)
s.sendall(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
sys.exit(0 if s.recv(12).startswith(b"HTTP/1.1 200") else 1)
EOF
    sleep 0.1
  done
  echo "ztunnel in $1 not ready after 20s" >&2
  return 1
}

cpu() { # total utime+stime (s) of the ztunnels
  python3 - "${zt_pids[@]}" <<'EOF'
import os, sys
t = 0
for p in sys.argv[1:]:
    f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    t += int(f[11]) + int(f[12])
print(t / os.sysconf("SC_CLK_TCK"))
EOF
}

rss_mib() { # mean VmRSS of the ztunnels
  local sum=0 kb
  for p in "${zt_pids[@]}"; do
    kb="$(awk '/^VmRSS/ {print $2}' "/proc/$p/status")"
    sum=$((sum + kb))
  done
  python3 -c "print(round($sum / ${#zt_pids[@]} / 1024, 1))"
}

rec() { # round mode metric value
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$out"
}

iperf() { # streams -> "bits_per_second bytes"
  ina iperf3 -c "$IPB" -p "$IPERF_PORT" -t "$secs" -P "$1" -J --connect-timeout 5000 \
    >"$work/iperf.json" || { cat "$work/iperf.json" >&2; return 1; }
  python3 -c '
import json, sys
e = json.load(open(sys.argv[1]))["end"]["sum_received"]
print(e["bits_per_second"], e["bytes"])' "$work/iperf.json"
}

kv() { # key line -> value
  tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k {print $2}'
}

run_mode() { # round mode
  local r="$1" m="$2"
  case "$m" in
    direct) ;;
    istio)
      start_istio node-a "$A" client "$tok_a"
      start_istio node-b "$B" server "$tok_b"
      ;;
    meshwork)
      start_meshwork node-a "$A" "$tok_a" "$mw" "${MESHWORK_ARGS:-}" "${MESHWORK_ENV:-}"
      start_meshwork node-b "$B" "$tok_b" "$mw" "${MESHWORK_ARGS:-}" "${MESHWORK_ENV:-}"
      ;;
    meshwork_b)
      start_meshwork node-a "$A" "$tok_a" "$mw_b" "${MESHWORK_B_ARGS:-}" "${MESHWORK_B_ENV:-}"
      start_meshwork node-b "$B" "$tok_b" "$mw_b" "${MESHWORK_B_ARGS:-}" "${MESHWORK_B_ENV:-}"
      ;;
    meshwork_c)
      start_meshwork node-a "$A" "$tok_a" "$mw_c" "${MESHWORK_C_ARGS:-}" "${MESHWORK_C_ENV:-}"
      start_meshwork node-b "$B" "$tok_b" "$mw_c" "${MESHWORK_C_ARGS:-}" "${MESHWORK_C_ENV:-}"
      ;;
  esac
  if [[ "$m" != direct ]]; then
    wait_ready "$A"
    wait_ready "$B"
    for p in "${zt_pids[@]}"; do check_pid "$p"; done
    capture -A
    # First connection: certificates, the pooled HBONE connection.
    ina "$load" rr "$IPB:$ECHO_PORT" 1 >/dev/null
    sleep 1
    rec "$r" "$m" idle_rss_mib "$(rss_mib)"
  fi
  rec "$r" "$m" load1 "$(cut -d' ' -f1 /proc/loadavg)"

  local c0 c1 res bps bytes
  local prof=""
  if [[ "$m" != direct && -n "${COMPARE_PROFILE:-}" ]]; then
    # Profile of both ztunnels over the 1-stream bulk phase (not part of the figures:
    # the round is a profiling round).
    case "$COMPARE_PROFILE" in
      perf) perf record -q -F 499 -o "$work/perf-$m-r$r.data" -p "$(IFS=,; echo "${zt_pids[*]}")" \
              -- sleep "$secs" >/dev/null 2>&1 & prof=$! ;;
      strace) timeout "$((secs + 5))" strace -c -f -o "$work/strace-$m-r$r.txt" \
                $(printf -- '-p %s ' "${zt_pids[@]}") & prof=$! ;;
    esac
    sleep 0.3
  fi
  c0="$(cpu 2>/dev/null || echo 0)"
  read -r bps bytes < <(iperf 1)
  c1="$(cpu 2>/dev/null || echo 0)"
  if [[ -n "$prof" ]]; then
    [[ "$COMPARE_PROFILE" == strace ]] && kill -INT "$prof" 2>/dev/null
    wait "$prof" 2>/dev/null || true
  fi
  rec "$r" "$m" bulk1_gbps "$(python3 -c "print(round($bps / 1e9, 2))")"
  [[ "$m" == direct ]] || rec "$r" "$m" cpu_s_per_gb "$(python3 -c "print(round(($c1 - $c0) / ($bytes / 1e9), 3))")"
  read -r bps bytes < <(iperf 4)
  rec "$r" "$m" bulk4_gbps "$(python3 -c "print(round($bps / 1e9, 2))")"

  if [[ -n "${COMPARE_BULK_ONLY:-}" ]]; then
    [[ "$m" == direct ]] || { capture -D; stop_ztunnels; sleep 0.5; }
    return 0
  fi
  res="$(ina "$load" rr "$IPB:$ECHO_PORT" "$secs")"
  rec "$r" "$m" rr_tps "$(kv tps "$res")"
  rec "$r" "$m" rr_p99_us "$(kv p99_us "$res")"
  res="$(ina "$load" crr "$IPB:$ECHO_PORT" "$secs" 4)"
  rec "$r" "$m" crr_cps "$(kv cps "$res")"
  [[ "$(kv errors "$res")" == 0 ]] || echo "round $r $m: crr errors: $res" >&2

  c0="$(cpu 2>/dev/null || echo 0)"
  res="$(ina "$load" http "$IPB:$HTTP_PORT" "$secs" 1000 10)"
  c1="$(cpu 2>/dev/null || echo 0)"
  rec "$r" "$m" http_p99_us "$(kv p99_us "$res")"
  local n
  n="$(kv n "$res")"
  [[ "$m" == direct ]] || rec "$r" "$m" cpu_s_per_1k_http "$(python3 -c "print(round(($c1 - $c0) / ($n / 1000), 4))")"
  [[ "$(kv errors "$res")" == 0 ]] || echo "round $r $m: http errors: $res" >&2

  if [[ "$m" != direct ]]; then
    capture -D
    stop_ztunnels
    sleep 0.5
  fi
}

IFS=, read -r -a mode_list <<<"$modes"
: >"$out"
for r in $(seq "$rounds"); do
  n=${#mode_list[@]}
  for i in $(seq 0 $((n - 1))); do
    m="${mode_list[$(((i + r - 1) % n))]}"
    echo "round $r/$rounds: $m (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    run_mode "$r" "$m"
  done
done
python3 "$here/bench/compare/table.py" "$out" "$threads"
[[ -z "${COMPARE_KEEP:-}" ]] || echo "logs and results: $work" >&2
