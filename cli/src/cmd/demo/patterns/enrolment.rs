//! (1) Workloads join the mesh: enrolment, /health, mTLS identities.

use super::*;

/// (1) enrolment, /health, mTLS identities.
pub async fn enrolment(mesh: &Mesh) -> Section {
    progress("pattern 1: enrolment, /health through the mesh, mTLS identities");
    let mut s = Section::new(1, "workloads join the mesh (01-order-service.yaml)");
    let model = get_text(&mesh.control_plane_admin, "/debug/model?prefix=workload/").await;
    let workloads: Vec<String> = serde_json::from_str::<serde_json::Value>(&model)
        .ok()
        .and_then(|v| {
            v["resources"].as_array().map(|a| {
                a.iter()
                    .filter_map(|r| r["key"].as_str())
                    .map(|k| k.trim_start_matches("workload/").to_string())
                    .collect()
            })
        })
        .unwrap_or_default();
    let errors = get_text(&mesh.control_plane_admin, "/debug/errors").await;
    let error_count = serde_json::from_str::<serde_json::Value>(&errors)
        .ok()
        .and_then(|v| v["errors"].as_array().map(Vec::len))
        .unwrap_or(0);
    s.line(format!(
        "control plane: {} workloads in the model, {error_count} manifest error(s)",
        workloads.len()
    ));
    s.line(format!("  {}", workloads.join(", ")));
    s.expect(
        error_count == 0,
        format!("the control plane reported {error_count} manifest error(s): {errors}"),
    );
    let expected = PODS.len();
    s.expect(
        workloads.len() >= expected,
        format!("expected the {expected} demo pods as workloads, the model has {workloads:?}"),
    );
    let health = burst(
        &mesh.via("order-client", "order-service"),
        vec![Request::get("/health"); HEALTH_REQUESTS],
        4,
    )
    .await;
    let ok = health
        .iter()
        .filter(|o| o.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    s.line(format!(
        "/health through the mesh: {ok}/{HEALTH_REQUESTS} answered 200"
    ));
    let first_failure = health
        .iter()
        .find(|o| !o.as_ref().is_ok_and(|r| r.status == 200))
        .map(|o| format!(" (first failure: {}{})", describe(o), ztunnel_failure(mesh)))
        .unwrap_or_default();
    s.expect(
        ok == HEALTH_REQUESTS,
        format!("/health: only {ok}/{HEALTH_REQUESTS} answered 200{first_failure}"),
    );
    s.data = serde_json::json!({
        "workloads": workloads,
        "manifest_errors": error_count,
        "health_ok": ok,
        "health_sent": HEALTH_REQUESTS,
    });
    s
}

/// Adds the mTLS identities the ztunnels saw over the whole run (metrics, plus the
/// source → destination pairs of their access logs) to the enrolment section.
pub async fn add_identities(s: &mut Section, mesh: &Mesh) {
    let mut principals = BTreeSet::new();
    for addr in mesh.ztunnel_metrics.values() {
        let text = get_text(addr, "/metrics").await;
        principals.extend(observe::mtls_label_values(&text, "source_principal"));
        principals.extend(observe::mtls_label_values(&text, "destination_principal"));
    }
    let mut pairs: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for node in mesh.ztunnel_metrics.keys() {
        for e in observe::ztunnel_entries(&mesh.log(&format!("ztunnel-{node}"), "out")) {
            if !e.src_identity.starts_with("spiffe://") || !e.dst_identity.starts_with("spiffe://")
            {
                continue;
            }
            principals.insert(e.src_identity.clone());
            principals.insert(e.dst_identity.clone());
            let counts = pairs
                .entry((short_id(&e.src_identity), short_id(&e.dst_identity)))
                .or_default();
            if e.decision.starts_with("allow") {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    s.line(format!(
        "mTLS (HBONE) identities seen by the ztunnels: {}",
        principals.len()
    ));
    for p in &principals {
        s.line(format!("  {p}"));
    }
    for ((src, dst), (allowed, denied)) in &pairs {
        s.line(format!(
            "  {src} → {dst}: {allowed} connection(s) allowed, {denied} refused"
        ));
    }
    let order = format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/order-service");
    s.expect(
        principals.contains(&order),
        format!("no mTLS connection from {order} seen by the ztunnels"),
    );
    if let Some(data) = s.data.as_object_mut() {
        data.insert("mtls_identities".into(), serde_json::json!(principals));
        data.insert(
            "mtls_connections".into(),
            serde_json::json!(pairs
                .iter()
                .map(|((src, dst), (a, d))| serde_json::json!({
                    "source": src, "destination": dst, "allowed": a, "refused": d,
                }))
                .collect::<Vec<_>>()),
        );
    }
}

/// `ns/<ns>/sa/<sa>` of a SPIFFE id.
pub(super) fn short_id(id: &str) -> String {
    id.split_once("/ns/")
        .map(|(_, rest)| format!("ns/{rest}"))
        .unwrap_or_else(|| id.to_string())
}

/// eBPF capture counters of one node's ztunnel (`/redirect`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Capture {
    pub enrolled: usize,
    pub outbound_syn: u64,
    pub inbound_hbone_syn: u64,
    pub inbound_plain_syn: u64,
}

impl Capture {
    pub(super) fn of(report: &serde_json::Value) -> Option<Capture> {
        let stats = &report["stats"];
        Some(Capture {
            enrolled: report["enrolled"].as_array()?.len(),
            outbound_syn: stats["outbound_syn"].as_u64()?,
            inbound_hbone_syn: stats["inbound_hbone_syn"].as_u64()?,
            inbound_plain_syn: stats["inbound_plain_syn"].as_u64()?,
        })
    }
}

/// In netns mode, adds what the eBPF redirection captured on each node (the ztunnels'
/// `/redirect` counters): the apps' own connections went through the mesh because the
/// kernel handed them to the ztunnel.
pub async fn add_capture(s: &mut Section, mesh: &Mesh) {
    let endpoints = mesh.redirect_endpoints();
    if endpoints.is_empty() {
        return;
    }
    let mut total = Capture::default();
    let mut rows = serde_json::Map::new();
    for (node, dial) in endpoints {
        let text = get_text(&dial, "/redirect").await;
        let Some(c) = serde_json::from_str(&text)
            .ok()
            .as_ref()
            .and_then(Capture::of)
        else {
            s.expect(
                false,
                format!("ztunnel {node}: no eBPF capture report on /redirect: {text:?}"),
            );
            continue;
        };
        s.line(format!(
            "eBPF capture on {node}: {} pod(s) enrolled, SYNs captured: {} outbound, {} inbound HBONE, {} inbound plaintext",
            c.enrolled, c.outbound_syn, c.inbound_hbone_syn, c.inbound_plain_syn
        ));
        total.outbound_syn += c.outbound_syn;
        total.inbound_hbone_syn += c.inbound_hbone_syn;
        rows.insert(
            node,
            serde_json::json!({
                "enrolled": c.enrolled, "outbound_syn": c.outbound_syn,
                "inbound_hbone_syn": c.inbound_hbone_syn, "inbound_plain_syn": c.inbound_plain_syn,
            }),
        );
    }
    s.expect(
        total.outbound_syn >= HEALTH_REQUESTS as u64,
        format!(
            "the redirection captured only {} outbound connection(s); the {HEALTH_REQUESTS} /health requests alone open that many",
            total.outbound_syn
        ),
    );
    s.expect(
        total.inbound_hbone_syn >= 1,
        "the redirection handed no HBONE connection to a ztunnel".into(),
    );
    if let Some(data) = s.data.as_object_mut() {
        data.insert("capture".into(), serde_json::Value::Object(rows));
    }
}
