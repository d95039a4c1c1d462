#!/usr/bin/env bash
# The whole kind + Cilium suite: cluster, images, mesh, apps, scenarios.
#   e2e/kind/run.sh            # everything
#   KEEP_CLUSTER=1 e2e/kind/run.sh   # leave the cluster up afterwards
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "$0")/lib.sh"

"$KIND_DIR/up.sh"
"$KIND_DIR/build-images.sh"
"$KIND_DIR/install-mesh.sh"
status=0
"$KIND_DIR/scenarios.sh" || status=$?
if [[ $status -ne 0 ]]; then
  log "collecting diagnostics"
  k get pods -A -o wide || true
  k -n "$MESH_NS" logs deployment/meshwork-controlplane --tail=200 || true
  k -n "$MESH_NS" logs daemonset/meshwork-ztunnel --tail=200 || true
fi
if [[ -z "${KEEP_CLUSTER:-}" ]]; then
  "$KIND_DIR/down.sh"
fi
exit "$status"
