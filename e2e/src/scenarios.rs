//! End-to-end scenarios, written once against [`MeshTarget`].
//!
//! Fixture (every target provides it):
//!
//! | pod | namespace (mode) | node | role |
//! |---|---|---|---|
//! | `client` | production (ambient) | n0 | caller, sa `client` |
//! | `orders-v1` | production (ambient) | n1 | app `orders` v1 |
//! | `orders-v2` | production (ambient) | n0 | app `orders` v2 |
//! | `payments` | production (ambient) | n1 | app `payments`, STRICT |
//! | `stranger` | other (ambient) | n1 | mesh peer from another namespace (no policies) |
//! | `outsider` | legacy (not captured) | n0 | plaintext caller |
//! | `plain-server` | legacy (not captured) | n1 | plaintext server |
//!
//! Services (port 80 → 8080): `orders-remote` → orders-v1 (cross node from client),
//! `orders-local` → orders-v2 (same node), `payments` → payments, `plain` → plain-server.
//! Policies: payments STRICT, `deny-all-default` in production denies peers whose
//! namespace is not production (as in seed 05).
use std::time::{Duration, Instant};

use crate::pcap::Capture;
use crate::target::{HttpSummary, MeshTarget, ScenarioError};

pub mod fixture {
    use std::net::Ipv4Addr;

    /// (pod, namespace, node index, app, version, service account)
    pub const PODS: &[(&str, &str, usize, &str, &str, &str)] = &[
        ("client", "production", 0, "client", "v1", "client"),
        ("orders-v1", "production", 1, "orders", "v1", "orders"),
        ("orders-v2", "production", 0, "orders", "v2", "orders"),
        ("payments", "production", 1, "payments", "v1", "payments"),
        ("stranger", "other", 1, "stranger", "v1", "stranger"),
        ("outsider", "legacy", 0, "outsider", "v1", "default"),
        ("plain-server", "legacy", 1, "plain", "v1", "default"),
    ];
    /// Namespaces and whether they are ambient.
    pub const NAMESPACES: &[(&str, bool)] =
        &[("production", true), ("other", true), ("legacy", false)];
    /// (service, namespace, vip, backend pods)
    pub const SERVICES: &[(&str, &str, Ipv4Addr, &[&str])] = &[
        (
            "orders-remote",
            "production",
            Ipv4Addr::new(10, 96, 0, 10),
            &["orders-v1"],
        ),
        (
            "orders-local",
            "production",
            Ipv4Addr::new(10, 96, 0, 11),
            &["orders-v2"],
        ),
        (
            "payments",
            "production",
            Ipv4Addr::new(10, 96, 0, 12),
            &["payments"],
        ),
        (
            "plain",
            "legacy",
            Ipv4Addr::new(10, 96, 0, 13),
            &["plain-server"],
        ),
    ];
    pub const SERVICE_PORT: u16 = 80;
    pub const APP_PORT: u16 = 8080;
    pub const HBONE_PORT: u16 = 15008;

    /// Istio policies of the fixture.
    pub const POLICIES: &str = r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: payments-strict
  namespace: production
spec:
  selector:
    matchLabels:
      app: payments
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-all-default
  namespace: production
spec:
  action: DENY
  rules:
    - from:
        - source:
            notNamespaces:
              - production
"#;
}

fn fail(scenario: &'static str, reason: String) -> ScenarioError {
    ScenarioError::Failed { scenario, reason }
}

fn unique_marker(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("mw-{tag}-{}-{nanos}", std::process::id())
}

fn expect_all_ok(
    scenario: &'static str,
    s: &HttpSummary,
    version: &str,
) -> Result<(), ScenarioError> {
    if s.total == 0 || s.count(200) != s.total || s.versions.get(version) != Some(&s.total) {
        return Err(fail(
            scenario,
            format!("expected {} x 200 from {version}: {s:?}", s.total),
        ));
    }
    Ok(())
}

/// Every answer says the server saw the client pod's own address, as without the mesh
/// (Istio ambient keeps the source IP; the tunnel's source is the node).
fn expect_client_address(
    scenario: &'static str,
    t: &dyn MeshTarget,
    s: &HttpSummary,
    client: &str,
) -> Result<(), ScenarioError> {
    let ip = t.pod_ip(client)?.to_string();
    if s.clients.get(&ip) != Some(&s.total) {
        return Err(fail(
            scenario,
            format!(
                "expected the server to see {client} as {ip}: {:?}",
                s.clients
            ),
        ));
    }
    Ok(())
}

/// A request from `client` (n0) to a service whose only backend is on n1.
pub fn cross_node_pod_to_service(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let url = t.service_url("orders-remote", "/api/orders")?;
    let s = t.http_get("client", &url, &[], 10)?;
    expect_all_ok("cross_node_pod_to_service", &s, "v1")?;
    expect_client_address("cross_node_pod_to_service", t, &s, "client")
}

/// A request from `client` to a service whose only backend is on the same node.
pub fn same_node_pod_to_service(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let url = t.service_url("orders-local", "/api/orders")?;
    let s = t.http_get("client", &url, &[], 10)?;
    expect_all_ok("same_node_pod_to_service", &s, "v2")?;
    expect_client_address("same_node_pod_to_service", t, &s, "client")
}

fn pod_segments_only_hbone(
    scenario: &'static str,
    cap: &Capture,
    marker: &str,
) -> Result<(), ScenarioError> {
    if cap.payload_contains(marker.as_bytes()) {
        return Err(fail(
            scenario,
            format!("request text {marker} seen in clear on the wire"),
        ));
    }
    let pod_net = |ip: std::net::Ipv4Addr| ip.octets()[0] == 10 && ip.octets()[1] == 244;
    let bad: Vec<_> = cap
        .tcp
        .iter()
        .filter(|s| pod_net(s.src) || pod_net(s.dst))
        .filter(|s| s.sport != fixture::HBONE_PORT && s.dport != fixture::HBONE_PORT)
        .collect();
    if !bad.is_empty() {
        return Err(fail(
            scenario,
            format!(
                "{} pod TCP segments not on 15008, first {:?}",
                bad.len(),
                bad[0]
            ),
        ));
    }
    if !cap.tcp.iter().any(|s| s.dport == fixture::HBONE_PORT) {
        return Err(fail(
            scenario,
            "no HBONE (15008) traffic captured at all".into(),
        ));
    }
    Ok(())
}

/// Cross-node traffic between enrolled pods is only TCP to 15008 on the wire, and the
/// request's text never appears.
pub fn mtls_on_the_wire(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let marker = unique_marker("wire");
    let url = t.service_url("orders-remote", &format!("/api/orders/{marker}"))?;
    let mut summary = None;
    let cap = t.capture_node_link("n0", &mut || {
        summary = Some(t.http_get("client", &url, &[("x-marker", &marker)], 5)?);
        Ok(())
    })?;
    let s = summary.unwrap_or_default();
    expect_all_ok("mtls_on_the_wire", &s, "v1")?;
    pod_segments_only_hbone("mtls_on_the_wire", &cap, &marker)
}

/// A pod that is not enrolled talks plaintext straight to a plaintext server.
pub fn non_enrolled_bypasses(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let marker = unique_marker("bypass");
    let url = t.pod_url("plain-server", fixture::APP_PORT, &format!("/{marker}"))?;
    let mut summary = None;
    let cap = t.capture_node_link("n0", &mut || {
        summary = Some(t.http_get("outsider", &url, &[], 3)?);
        Ok(())
    })?;
    let s = summary.unwrap_or_default();
    if s.count(200) != 3 {
        return Err(fail(
            "non_enrolled_bypasses",
            format!("expected 3 x 200: {s:?}"),
        ));
    }
    if !cap.payload_contains(marker.as_bytes()) {
        return Err(fail(
            "non_enrolled_bypasses",
            "plaintext request not seen on the wire: it did not bypass the mesh".into(),
        ));
    }
    Ok(())
}

/// STRICT: plaintext from a non-mesh pod is refused; mesh clients get through.
pub fn strict_refuses_plaintext(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let url = t.pod_url("payments", fixture::APP_PORT, "/api/payments")?;
    let s = t.http_get("outsider", &url, &[], 3)?;
    if s.count(200) != 0 {
        return Err(fail(
            "strict_refuses_plaintext",
            format!("plaintext accepted: {s:?}"),
        ));
    }
    let url = t.service_url("payments", "/api/payments")?;
    let s = t.http_get("client", &url, &[], 3)?;
    expect_all_ok("strict_refuses_plaintext", &s, "v1")
}

/// deny-all-default: a mesh peer from another namespace is denied, production is not.
pub fn deny_all_default(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let url = t.service_url("orders-remote", "/api/orders")?;
    let s = t.http_get("stranger", &url, &[], 3)?;
    if s.count(200) != 0 {
        return Err(fail(
            "deny_all_default",
            format!("other namespace allowed: {s:?}"),
        ));
    }
    let s = t.http_get("client", &url, &[], 3)?;
    expect_all_ok("deny_all_default", &s, "v1")
}

/// Unenrolling a pod takes it out of the mesh at once (its traffic is plaintext on the
/// wire); enrolling it again puts it back (HBONE only).
pub fn enrollment_toggled_live(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let scenario = "enrollment_toggled_live";
    // A mesh destination on the other node without policies (PERMISSIVE): enrolled, the
    // client's traffic to it is HBONE; unenrolled, it is plaintext on the wire.
    let url = t.pod_url("stranger", fixture::APP_PORT, "/")?;
    t.set_enrolled("client", false)?;
    let marker = unique_marker("off");
    let off_url = format!("{url}{marker}");
    let cap = t.capture_node_link("n0", &mut || {
        t.http_get("client", &off_url, &[], 2).map(|_| ())
    })?;
    if !cap.payload_contains(marker.as_bytes()) {
        t.set_enrolled("client", true)?;
        return Err(fail(
            scenario,
            "unenrolled client's request not plaintext".into(),
        ));
    }
    t.set_enrolled("client", true)?;
    let start = Instant::now();
    let marker = unique_marker("on");
    let on_url = format!("{url}{marker}");
    let cap = t.capture_node_link("n0", &mut || {
        t.http_get("client", &on_url, &[], 2).map(|_| ())
    })?;
    if cap.payload_contains(marker.as_bytes()) {
        return Err(fail(
            scenario,
            "re-enrolled client still sends plaintext".into(),
        ));
    }
    if start.elapsed() > Duration::from_secs(10) {
        return Err(fail(scenario, format!("took {:?}", start.elapsed())));
    }
    Ok(())
}

/// Restarting a node's ztunnel while requests flow: a request in flight when the old
/// ztunnel is told to stop (it drains) completes, no plaintext leaks on the wire, and new
/// requests succeed once the new ztunnel is up.
pub fn ztunnel_restart_under_load(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let scenario = "ztunnel_restart_under_load";
    let marker = unique_marker("restart");
    let url = t.service_url("orders-remote", &format!("/api/orders/{marker}"))?;
    let cap = t.capture_node_link("n0", &mut || {
        let before = t.http_get("client", &url, &[], 5)?;
        expect_all_ok(scenario, &before, "v1")?;
        std::thread::scope(|s| {
            // Established before the restart, answered 1 s later: inside the drain window.
            let in_flight =
                s.spawn(|| t.http_get("client", &url, &[("x-testapp-delay-ms", "1000")], 1));
            std::thread::sleep(Duration::from_millis(400));
            t.restart_ztunnel("n0")?;
            let done = in_flight
                .join()
                .map_err(|_| fail(scenario, "in-flight request thread panicked".into()))??;
            if done.count(200) != 1 {
                return Err(fail(scenario, format!("in-flight request lost: {done:?}")));
            }
            Ok(())
        })?;
        // Bounded retry while the new ztunnel comes up.
        let deadline = Instant::now() + t.settle() * 5;
        loop {
            let s = t.http_get("client", &url, &[], 5)?;
            if s.count(200) == 5 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(fail(scenario, format!("no recovery after restart: {s:?}")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })?;
    pod_segments_only_hbone(scenario, &cap, &marker)
}

/// Connections opened by `node`'s ztunnel as the client side towards `service` (the sum of
/// its `istio_tcp_connections_opened_total{reporter="source",destination_service=...}`).
fn opened_to_service(t: &dyn MeshTarget, node: &str, fqdn: &str) -> Result<u64, ScenarioError> {
    let text = t.ztunnel_metrics(node)?;
    let service = format!("destination_service=\"{fqdn}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .filter(|l| l.contains("reporter=\"source\"") && l.contains(&service))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// A request to a service VIP reaches the client's ztunnel *as service traffic*: it sees
/// the VIP (and so can route by service: waypoints, VirtualServices), not an endpoint that
/// something before it (kube-proxy's DNAT) already chose.
pub fn service_vip_seen_by_ztunnel(t: &dyn MeshTarget) -> Result<(), ScenarioError> {
    let scenario = "service_vip_seen_by_ztunnel";
    let fqdn = "orders-remote.production.svc.cluster.local";
    let before = opened_to_service(t, "n0", fqdn)?;
    let url = t.service_url("orders-remote", "/api/orders")?;
    let s = t.http_get("client", &url, &[], 3)?;
    expect_all_ok(scenario, &s, "v1")?;
    let after = opened_to_service(t, "n0", fqdn)?;
    // The test app reuses one connection for its requests: at least one is counted.
    if after <= before {
        return Err(fail(
            scenario,
            format!("n0's ztunnel counted no connection to {fqdn} for requests to its VIP"),
        ));
    }
    // orders-v1 runs on n1: n0 holds it in the compact remote view (no labels), which still
    // names its app and version, derived from its labels by the control plane.
    let text = t.ztunnel_metrics("n0")?;
    let service = format!("destination_service=\"{fqdn}\"");
    let named = text
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .filter(|l| l.contains("reporter=\"source\"") && l.contains(&service))
        .any(|l| {
            l.contains("destination_workload=\"orders-v1\"")
                && l.contains("destination_app=\"orders\"")
                && l.contains("destination_version=\"v1\"")
        });
    if !named {
        return Err(fail(
            scenario,
            format!("n0's series for {fqdn} do not name orders-v1, app orders, version v1"),
        ));
    }
    Ok(())
}
