#!/usr/bin/env bash
# Installs what building and testing the eBPF redirection needs. Idempotent: every step
# checks first and does nothing when its piece is already there.
#   - nightly Rust with rust-src (the BPF crate is built with -Z build-std=core)
#   - bpf-linker 0.10.4 (links the BPF object; uses nightly's LLVM)
#   - iproute2 (ip netns/link/rule/route for the mini-cluster) and tcpdump (wire checks)
#   - a bpffs at /sys/fs/bpf (pins of programs and maps)
set -euo pipefail

BPF_LINKER_VERSION="0.10.4"

log() { echo "install-ebpf-toolchain: $*" >&2; }

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi

installed_linker=""
if command -v bpf-linker >/dev/null 2>&1; then
  installed_linker="$(bpf-linker --version 2>/dev/null | awk '{print $2}')"
fi
if [ "${installed_linker}" != "${BPF_LINKER_VERSION}" ]; then
  log "installing bpf-linker ${BPF_LINKER_VERSION} (found '${installed_linker:-none}'); this takes minutes"
  cargo install --locked "bpf-linker@${BPF_LINKER_VERSION}" || cargo install "bpf-linker@${BPF_LINKER_VERSION}"
fi

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "$(id -u)" = "0" ] && ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  log "mounting bpffs at /sys/fs/bpf"
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi
log "ok"
