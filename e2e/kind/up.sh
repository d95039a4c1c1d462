#!/usr/bin/env bash
# Creates the kind cluster (no default CNI, $KIND_CONFIG) and installs Cilium ($CILIUM_VALUES).
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "$0")/lib.sh"
require kind kubectl helm docker

if kind get clusters | grep -qx "$CLUSTER"; then
  log "cluster $CLUSTER exists"
else
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$KIND_DIR/$KIND_CONFIG" --wait 0s
fi

log "installing Cilium $CILIUM_VERSION"
helm repo add cilium https://helm.cilium.io/ --force-update >/dev/null
helm upgrade --install cilium cilium/cilium --kube-context "$CONTEXT" \
  --version "$CILIUM_VERSION" --namespace kube-system \
  -f "$KIND_DIR/$CILIUM_VALUES" --wait --timeout "$TIMEOUT"
k -n kube-system rollout status daemonset/cilium --timeout "$TIMEOUT"
k wait --for=condition=Ready nodes --all --timeout "$TIMEOUT"
log "cluster ready"
