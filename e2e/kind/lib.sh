#!/usr/bin/env bash
# Shared settings and helpers of the kind e2e scripts (sourced).
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
set -euo pipefail

KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KIND_DIR/../.." && pwd)"
CLUSTER="${MESHWORK_KIND_CLUSTER:-meshwork}"
CONTEXT="kind-$CLUSTER"
IMAGE_REGISTRY="${MESHWORK_IMAGE_REGISTRY:-meshwork}"
IMAGE_TAG="${MESHWORK_IMAGE_TAG:-e2e}"
IMAGES=(controlplane ztunnel waypoint testapp meshwork)
CILIUM_VERSION="${CILIUM_VERSION:-1.18.2}"
# Cilium values and kind config (defaults: Cilium's default settings with kube-proxy;
# CILIUM_VALUES=cilium-kpr-values.yaml KIND_CONFIG=kind-config-kpr.yaml: kube-proxy replacement).
CILIUM_VALUES="${CILIUM_VALUES:-cilium-values.yaml}"
KIND_CONFIG="${KIND_CONFIG:-kind-config.yaml}"
ISTIO_VERSION="${ISTIO_VERSION:-1.27.1}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.3.0}"
MESH_NS="istio-system"
APP_NS="production"
TIMEOUT="${MESHWORK_E2E_TIMEOUT:-300s}"

log() { printf '[e2e-kind] %s\n' "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}
k() { kubectl --context "$CONTEXT" "$@"; }

require() {
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    die "missing tools: ${missing[*]} (see e2e/kind/README.md)"
  fi
}

# The meshwork CLI (the image built from the Dockerfile's `meshwork` target) against the
# cluster: host network, so it reaches kind's API server on 127.0.0.1.
mw() {
  local kubeconfig
  kubeconfig="$(mktemp)"
  kind get kubeconfig --name "$CLUSTER" >"$kubeconfig"
  chmod 644 "$kubeconfig"
  local status=0
  docker run --rm --network host -v "$kubeconfig:/kubeconfig:ro" -e KUBECONFIG=/kubeconfig \
    "$IMAGE_REGISTRY/meshwork:$IMAGE_TAG" "$@" || status=$?
  rm -f "$kubeconfig"
  return "$status"
}
