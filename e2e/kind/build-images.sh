#!/usr/bin/env bash
# Builds the images from the repository's Dockerfile and loads them into the kind nodes.
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "$0")/lib.sh"
require docker kind

for image in "${IMAGES[@]}"; do
  ref="$IMAGE_REGISTRY/$image:$IMAGE_TAG"
  log "building $ref"
  DOCKER_BUILDKIT=1 docker build --target "$image" -t "$ref" "$REPO_ROOT"
  log "loading $ref into $CLUSTER"
  kind load docker-image --name "$CLUSTER" "$ref"
done
