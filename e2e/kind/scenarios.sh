#!/usr/bin/env bash
# Scenario checks against the running cluster (after up.sh, build-images.sh and
# install-mesh.sh): the netns harness's scenarios, with kubectl.
# shellcheck source=e2e/kind/lib.sh
source "$(dirname "$0")/lib.sh"
require kubectl kind docker

passed=0
failed=0
pass() {
  log "ok: $*"
  passed=$((passed + 1))
}
fail() {
  log "FAILED: $*"
  failed=$((failed + 1))
}

node_of() { k get nodes -l "meshwork.io/e2e-node=$1" -o jsonpath='{.items[0].metadata.name}'; }

# get NS DEPLOYMENT URL [COUNT]: prints the testapp client's JSON summary.
get() {
  k -n "$1" exec "deploy/$2" -- meshwork-testapp get "$3" --count "${4:-5}" --timeout-ms 3000 || true
}
ok_count() { sed -n 's/.*"200":\([0-9]*\).*/\1/p' <<<"$1"; }

expect_ok() {
  local what="$1" out
  out="$(get "$2" "$3" "$4")"
  if [[ "$(ok_count "$out")" == "5" ]]; then pass "$what"; else fail "$what: $out"; fi
}
expect_refused() {
  local what="$1" out
  out="$(get "$2" "$3" "$4")"
  if [[ -z "$(ok_count "$out")" ]]; then pass "$what"; else fail "$what (expected no 200): $out"; fi
}

# client_address WHAT: the echo server sees client-a's pod IP (source kept through HBONE).
client_address() {
  local ip out
  ip="$(k -n production get pod -l app=client-a -o jsonpath='{.items[0].status.podIP}')"
  out="$(get production client-a http://echo.production/ 5)"
  if grep -q "\"clients\":{\"$ip\":5}" <<<"$out"; then pass "$1"; else fail "$1 (client-a is $ip): $out"; fi
}

# capture NODE SECONDS: starts tcpdump in the node's network namespace for HBONE (15008)
# and plaintext app (8080) traffic, on every interface (Cilium's default tunnel mode
# carries pod traffic in VXLAN on eth0; cilium_vxlan and the lxc veths show it
# decapsulated); prints the pod name.
capture() {
  local pod
  pod="sniff-$RANDOM"
  k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $pod
  namespace: default
spec:
  hostNetwork: true
  nodeName: $1
  restartPolicy: Never
  containers:
    - name: tcpdump
      image: nicolaka/netshoot:v0.14
      command: [timeout, "$2", tcpdump, -nn, -A, -i, any, "tcp port 15008 or tcp port 8080"]
      securityContext:
        capabilities:
          add: [NET_ADMIN, NET_RAW]
YAML
  k -n default wait --for=condition=Ready "pod/$pod" --timeout=120s >/dev/null
  echo "$pod"
}
capture_output() {
  k -n default wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$1" --timeout=120s >/dev/null || true
  k -n default logs "$1" 2>/dev/null || true
  k -n default delete pod "$1" --wait=false >/dev/null
}

# wire_check WHAT EXPECT(hbone|plaintext): cross-node requests from production/client-a
# to production/echo while capturing on the server's node.
wire_check() {
  local what="$1" expect="$2" pod dump
  pod="$(capture "$(node_of b)" 15)"
  get production client-a http://echo.production/ 5 >/dev/null
  dump="$(capture_output "$pod")"
  local hbone=0 plain=0
  grep -q '\.15008[ :]' <<<"$dump" && hbone=1
  grep -q 'GET / HTTP/1.1' <<<"$dump" && plain=1
  local want_hbone=1 want_plain=0
  if [[ "$expect" == plaintext ]]; then
    want_hbone=0
    want_plain=1
  fi
  if [[ $hbone == "$want_hbone" && $plain == "$want_plain" ]]; then
    pass "$what"
  else
    fail "$what (hbone=$hbone plaintext=$plain)"
  fi
}

log "applying test apps and policies"
k apply -f "$KIND_DIR/manifests/00-namespaces.yaml"
k apply -f "$KIND_DIR/manifests/10-apps.yaml"
for ns in production other legacy; do
  k -n "$ns" rollout status deployment --timeout "$TIMEOUT"
done
k apply -f "$KIND_DIR/manifests/20-zero-trust.yaml"
# Give the control plane a moment to push the policies to every ztunnel.
sleep 5

expect_ok "cross-node pod -> service (production, mTLS)" production client-a http://echo.production/
expect_ok "same-node pod -> service (production, mTLS)" production client-b http://echo.production/
wire_check "cross-node traffic is HBONE on the wire, no plaintext HTTP" hbone
client_address "the server sees the client pod's own IP through the mesh"
expect_ok "non-enrolled namespace bypasses the mesh (legacy -> legacy)" legacy client-a http://echo.legacy/
expect_refused "STRICT refuses plaintext (legacy -> production/payment-service)" legacy client-a http://payment-service.production/health
expect_refused "deny-all-default refuses a non-production identity (other -> production/echo)" other client-a http://echo.production/

log "live enrollment toggle"
k label namespace production istio.io/dataplane-mode-
sleep 5
k label namespace other istio.io/dataplane-mode- >/dev/null
expect_ok "unenrolled production still reachable (plaintext)" production client-a http://echo.production/
wire_check "unenrolled production traffic is plaintext on the wire" plaintext
k label namespace production istio.io/dataplane-mode=ambient --overwrite
k label namespace other istio.io/dataplane-mode=ambient --overwrite >/dev/null
sleep 5
expect_ok "re-enrolled production reachable" production client-a http://echo.production/
wire_check "re-enrolled production traffic is HBONE again" hbone

log "status written back on Istio resources"
reason="$(k -n production get peerauthentication payment-service-mtls -o jsonpath='{.status.conditions[?(@.type=="Accepted")].status}')"
if [[ "$reason" == "True" ]]; then pass "PeerAuthentication Accepted=True"; else fail "PeerAuthentication status: '$reason'"; fi

log "waypoint deployed by the control plane (meshwork waypoint apply)"
if mw waypoint apply -n production --name waypoint --for service --wait --timeout 3m; then
  pass "meshwork waypoint apply -n production --wait (Gateway Programmed)"
else
  fail "meshwork waypoint apply -n production"
fi
if k -n production rollout status deployment/waypoint --timeout "$TIMEOUT"; then
  pass "waypoint Deployment created and ready"
else
  fail "waypoint Deployment not ready"
fi
owner="$(k -n production get deployment waypoint -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}' || true)"
if [[ "$owner" == "Gateway/waypoint" ]]; then pass "waypoint Deployment owned by its Gateway"; else fail "waypoint owner: '$owner'"; fi
programmed=""
for _ in $(seq 30); do
  programmed="$(k -n production get gateway waypoint -o jsonpath='{.status.conditions[?(@.type=="Programmed")].status} {.status.addresses[0].value}' || true)"
  [[ "$programmed" == True\ ?* ]] && break
  sleep 2
done
if [[ "$programmed" == True\ ?* ]]; then pass "Gateway Programmed=True with address ${programmed#True }"; else fail "Gateway status: '$programmed'"; fi
class="$(k get gatewayclass istio-waypoint -o jsonpath='{.spec.controllerName} {.status.conditions[?(@.type=="Accepted")].status}' || true)"
if [[ "$class" == "istio.io/mesh-controller True" ]]; then pass "GatewayClass istio-waypoint provided and Accepted"; else fail "GatewayClass istio-waypoint: '$class'"; fi
listed="$(mw waypoint list -n production || true)"
if grep -q '^production  *waypoint ' <<<"$listed"; then pass "meshwork waypoint list shows it"; else fail "waypoint list: $listed"; fi
mw waypoint delete -n production waypoint >/dev/null || true
if k -n production wait --for=delete deployment/waypoint --timeout=120s; then
  pass "meshwork waypoint delete: garbage collection removes the Deployment"
else
  fail "waypoint Deployment still present after the Gateway was deleted"
fi

echo "e2e-kind: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
