#!/usr/bin/env bash
# Installs the CRDs Meshwork reads (Istio base, Gateway API) and the meshwork chart with
# the locally built images.
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "$0")/lib.sh"
require kubectl helm

log "Gateway API CRDs $GATEWAY_API_VERSION"
k apply -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"

log "Istio base CRDs $ISTIO_VERSION"
helm repo add istio https://istio-release.storage.googleapis.com/charts --force-update >/dev/null
helm upgrade --install istio-base istio/base --kube-context "$CONTEXT" \
  --version "$ISTIO_VERSION" --namespace "$MESH_NS" --create-namespace --wait

log "meshwork chart"
helm upgrade --install meshwork "$REPO_ROOT/charts/meshwork" --kube-context "$CONTEXT" \
  --namespace "$MESH_NS" --create-namespace \
  --set global.imageRegistry="$IMAGE_REGISTRY" \
  --set global.tag="$IMAGE_TAG" \
  --set global.pullPolicy=Never \
  --set controlplane.replicas=2 \
  --wait --timeout "$TIMEOUT"
k -n "$MESH_NS" rollout status deployment/meshwork-controlplane --timeout "$TIMEOUT"
k -n "$MESH_NS" rollout status daemonset/meshwork-ztunnel --timeout "$TIMEOUT"
