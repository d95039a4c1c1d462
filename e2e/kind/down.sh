#!/usr/bin/env bash
# Deletes the kind cluster.
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "$0")/lib.sh"
require kind
kind delete cluster --name "$CLUSTER"
