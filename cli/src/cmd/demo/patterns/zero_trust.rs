//! (5) Zero trust: who may call payment-service, and which policy decided.

use super::*;

/// One zero-trust case.
struct Case {
    name: &'static str,
    from: &'static str,
    req: Request,
    allow: bool,
}

/// (5) mTLS STRICT and authorization policies on payment-service.
pub async fn zero_trust(mesh: &Mesh) -> Section {
    progress("pattern 5: who may call payment-service");
    let mut s = Section::new(5, "zero trust (05-zero-trust.yaml)");
    let post = || Request::post("/api/payments/charge");
    let cases = [
        Case {
            name: "order-service POST /api/payments/charge",
            from: "order-client",
            req: post(),
            allow: true,
        },
        Case {
            name: "order-service GET  /api/payments/charge",
            from: "order-client",
            req: Request::get("/api/payments/charge"),
            allow: false,
        },
        Case {
            name: "order-service POST, x-user-role: guest",
            from: "order-client",
            req: post().header("x-user-role", "guest"),
            allow: false,
        },
        Case {
            name: "partners/default POST (foreign namespace)",
            from: "partner-client",
            req: post(),
            allow: false,
        },
    ];
    let mut rows = Vec::new();
    for (i, c) in cases.into_iter().enumerate() {
        let id = format!("demo-zt-{i}");
        let req = c.req.header("x-request-id", &id);
        let out = http::send(&mesh.via(c.from, "payment-service"), &req, TIMEOUT).await;
        let (allowed, seen) = match &out {
            Ok(r) => (r.status < 400, format!("HTTP {}", r.status)),
            Err(HttpError::Refused { code, .. }) => (
                false,
                format!("connection refused by the ztunnel (SOCKS5 code {code})"),
            ),
            Err(e) => (false, format!("error: {e}")),
        };
        let log = observe::waypoint_entries(&mesh.log("waypoint", "out"));
        let entry = log.iter().rev().find(|e| e.request_id == id);
        let policy = match entry {
            Some(e) if !e.authz_policy.is_empty() => format!(", by {}", e.authz_policy),
            Some(e) if !e.response_code_details.is_empty() => {
                format!(": {}", e.response_code_details)
            }
            _ => match ztunnel_denial(mesh, c.from) {
                d if d.is_empty() => String::new(),
                d => format!(": {d}"),
            },
        };
        let verdict = if allowed { "allowed" } else { "denied" };
        s.line(format!("{:<44} → {verdict} ({seen}{policy})", c.name));
        s.expect(
            allowed == c.allow,
            format!(
                "{}: expected {}, got {verdict} ({seen})",
                c.name,
                if c.allow { "allowed" } else { "denied" }
            ),
        );
        rows.push(serde_json::json!({
            "case": c.name, "expected_allow": c.allow, "allowed": allowed,
            "observed": seen,
            "policy": policy.trim_start_matches(", by ").trim_start_matches(": "),
        }));
    }
    s.line(
        "plaintext to payment-service (STRICT): not driven in loopback mode: \
         plaintext can only reach a pod through traffic capture (netns mode)"
            .into(),
    );
    s.data = serde_json::json!({ "cases": rows });
    s
}

/// The policy a ztunnel named when it denied a connection from `from`, if it logged one.
fn ztunnel_denial(mesh: &Mesh, from: &str) -> String {
    let pod = crate::cmd::demo::topology::pod_named(from);
    let principal = format!("ns/{}/sa/{}", pod.namespace, pod.service_account);
    mesh.ztunnel_metrics
        .keys()
        .flat_map(|node| observe::ztunnel_entries(&mesh.log(&format!("ztunnel-{node}"), "out")))
        .filter(|e| e.src_identity.contains(&principal) && e.decision.contains("deny"))
        .map(|e| {
            if e.error.is_empty() {
                e.decision
            } else {
                e.error
            }
        })
        .next_back()
        .unwrap_or_default()
}
