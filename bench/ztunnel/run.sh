#!/usr/bin/env bash
# ztunnel benchmark: builds release binaries and runs direct TCP vs. two ztunnels over
# loopback (127.88.0.0/24). Usage: bench/ztunnel/run.sh [--secs N]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/meshwork-target}"
cargo build --release -p meshwork-ztunnel --features bench --bin ztunnel --bin ztunnel-bench
exec "$CARGO_TARGET_DIR/release/ztunnel-bench" "$@"
