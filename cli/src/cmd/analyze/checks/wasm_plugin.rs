//! WasmPlugin attachment mistakes.
//!
//! - `ineffective-selector` (Istio's IST0166, `k8sgateway.SelectorAnalyzer`, for
//!   AuthorizationPolicy, Telemetry and WasmPlugin alike): a `selector` that matches the
//!   pods of a Kubernetes Gateway (a waypoint); such policies attach with `targetRefs`.
//! - `wasm-plugin-no-waypoint` (Meshwork; issue #22 asks for it): a WasmPlugin whose
//!   `targetRefs` name no waypoint: no Gateway of class `istio-waypoint` of that name, or a
//!   Service that does not exist. Meshwork runs plugins in waypoints only, so such a plugin
//!   runs nowhere.
//! - `wasm-plugin-fail-strategy` (Meshwork; docs/istio-differences.md): an attached plugin
//!   whose `failStrategy` means something else here when the plugin traps. `FAIL_CLOSE`
//!   (also the default): Envoy keeps failing every later request until the VM is
//!   reloaded; Meshwork fails the trapping request and replaces the instance at once
//!   (`FAIL_RELOAD`). `FAIL_OPEN`: the trapping request itself passes here (Envoy's
//!   `fail_open: true`); Envoy's `failure_policy: FAIL_OPEN` still fails it. `FAIL_RELOAD`
//!   means the same in both.

use meshwork_api::extensions::FailStrategy;
use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

const LABEL_GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";
const WAYPOINT_CLASS: &str = "istio-waypoint";

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for kind in [Kind::AuthorizationPolicy, Kind::Telemetry, Kind::WasmPlugin] {
        for s in ctx.of_kind(kind) {
            let (selector, has_target) = match &s.object.spec {
                Spec::AuthorizationPolicy(p) => (p.selector.as_ref(), p.target_ref.is_some()),
                Spec::Telemetry(t) => (t.selector.as_ref(), t.target_ref.is_some()),
                Spec::WasmPlugin(w) => (w.selector.as_ref(), w.target_ref.is_some()),
                _ => continue,
            };
            let Some(sel) = selector.filter(|_| !has_target) else {
                continue;
            };
            let ns = &s.object.namespace;
            let mut gateways: Vec<&String> = ctx
                .of_kind(Kind::Pod)
                .filter(|p| &p.object.namespace == ns)
                .filter_map(|p| {
                    let gw = p.object.labels.get(LABEL_GATEWAY_NAME)?;
                    sel.matches(&p.object.labels).then_some(gw)
                })
                .collect();
            gateways.sort();
            gateways.dedup();
            for gw in gateways {
                out.push(
                    Finding::new(
                        Severity::Warning,
                        "ineffective-selector",
                        Context::label(&s.object),
                        Context::file_of(s),
                        format!("Ineffective selector on Kubernetes Gateway {gw}. Use the TargetRef field instead."),
                        format!("replace spec.selector with targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: {gw}}}]"),
                    )
                    .with_code("IST0166"),
                );
            }
        }
    }
    for s in ctx.of_kind(Kind::WasmPlugin) {
        let Spec::WasmPlugin(w) = &s.object.spec else {
            continue;
        };
        let ns = &s.object.namespace;
        for (i, r) in w.all_target_refs().iter().enumerate() {
            let problem = match (r.group.as_str(), r.kind.as_str()) {
                ("gateway.networking.k8s.io", "Gateway") => {
                    match ctx
                        .of_kind(Kind::Gateway)
                        .find(|g| &g.object.namespace == ns && g.object.name == r.name)
                    {
                        None => Some(format!("Gateway {ns}/{} does not exist", r.name)),
                        Some(g) => match &g.object.spec {
                            Spec::Gateway(gw) if gw.gateway_class_name != WAYPOINT_CLASS => {
                                Some(format!(
                                    "Gateway {ns}/{} is of class {:?}, not a waypoint ({WAYPOINT_CLASS})",
                                    r.name, gw.gateway_class_name
                                ))
                            }
                            _ => None,
                        },
                    }
                }
                ("" | "core", "Service") if ctx.service(ns, &r.name).is_none() => {
                    Some(format!("Service {ns}/{} does not exist", r.name))
                }
                _ => None,
            };
            if let Some(p) = problem {
                out.push(Finding::new(
                    Severity::Warning,
                    "wasm-plugin-no-waypoint",
                    Context::label(&s.object),
                    Context::file_of(s),
                    format!("spec.targetRefs[{i}]: {p}: the plugin runs in no waypoint"),
                    "target a waypoint Gateway (gatewayClassName: istio-waypoint) or a Service that uses one",
                ));
            }
        }
    }
    let nowhere: Vec<String> = out
        .iter()
        .filter(|f| f.check == "wasm-plugin-no-waypoint")
        .map(|f| f.resource.clone())
        .collect();
    out.extend(fail_strategy(ctx, &nowhere));
    out
}

/// `wasm-plugin-fail-strategy`: plugins with targetRefs whose failStrategy Meshwork applies
/// differently from Envoy on a trap (not those in `nowhere`: they run in no waypoint).
fn fail_strategy(ctx: &Context, nowhere: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::WasmPlugin) {
        let Spec::WasmPlugin(w) = &s.object.spec else {
            continue;
        };
        if w.all_target_refs().is_empty() || nowhere.contains(&Context::label(&s.object)) {
            continue;
        }
        let (name, differs) = match w.fail_strategy.unwrap_or_default() {
            FailStrategy::FailReload => continue,
            FailStrategy::FailClose => (
                if w.fail_strategy.is_some() {
                    "FAIL_CLOSE"
                } else {
                    "FAIL_CLOSE (the default)"
                },
                "when the plugin traps, Meshwork fails that request (503 wasm_fail_stream) and replaces the instance at once, so later requests run; Istio's Envoy keeps failing every request until the VM is reloaded",
            ),
            FailStrategy::FailOpen => (
                "FAIL_OPEN",
                "when the plugin traps, Meshwork lets that request itself pass without the plugin (Envoy's fail_open: true); Envoy's failure_policy FAIL_OPEN fails the trapping request and skips the plugin only for later ones",
            ),
        };
        out.push(Finding::new(
            Severity::Warning,
            "wasm-plugin-fail-strategy",
            Context::label(&s.object),
            Context::file_of(s),
            format!("spec.failStrategy {name}: {differs} (docs/istio-differences.md)"),
            "set failStrategy: FAIL_RELOAD for a trap to fail its request and reload the plugin in both",
        ));
    }
    out
}
