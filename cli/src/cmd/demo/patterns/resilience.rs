//! (3) Resilience: retries, outlier ejection and pool overflow on payment-service.

use super::*;

/// (3) retries, outlier ejection, pool overflow on payment-service.
pub async fn resilience(mesh: &Mesh) -> Section {
    progress("pattern 3: a failing payment endpoint (retries, ejection), then an overload");
    let mut s = Section::new(3, "resilience (03-payment-resilience.yaml)");
    let via = mesh.via("order-client", "payment-service");
    let flaky = "payment-service-2";
    let fault = http::send(
        &mesh.direct(flaky),
        &Request::post("/admin/fail?rate=1&code=503"),
        Duration::from_secs(5),
    )
    .await;
    s.expect(
        fault.as_ref().is_ok_and(|r| r.status == 200),
        format!("could not switch {flaky} to failing: {fault:?}"),
    );
    let reqs = (0..RETRY_REQUESTS)
        .map(|i| with_id(Request::post("/api/payments/charge"), "demo-retry", i))
        .collect();
    // One at a time, so consecutive failures of the flaky endpoint are visible.
    let outcomes = burst(&via, reqs, 1).await;
    let _ = http::send(
        &mesh.direct(flaky),
        &Request::post("/admin/fail?rate=0"),
        Duration::from_secs(5),
    )
    .await;
    let ok = outcomes
        .iter()
        .filter(|o| o.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    let log = observe::waypoint_entries(&mesh.log("waypoint", "out"));
    let retried: Vec<&observe::WaypointEntry> = log
        .iter()
        .filter(|e| e.request_id.starts_with("demo-retry-") && e.attempts > 1)
        .collect();
    let extra: u32 = retried.iter().map(|e| e.attempts - 1).sum();
    let ejected: Vec<String> = observe::field_on_lines(
        &mesh.log("waypoint", "err"),
        "outlier: host ejected",
        "addr",
    )
    .iter()
    .map(|a| pod_at(mesh, a))
    .collect();
    let ejections = ejected.len();
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for e in log
        .iter()
        .filter(|e| e.request_id.starts_with("demo-retry-"))
    {
        *served.entry(pod_at(mesh, &e.upstream_host)).or_default() += 1;
    }
    s.line(format!(
        "{RETRY_REQUESTS} POSTs with {flaky} answering 503: {ok} succeeded, {} needed a retry ({extra} extra attempt(s))",
        retried.len()
    ));
    s.line(format!(
        "outlier detection: {ejections} ejection(s) logged by the waypoint{}",
        if ejected.is_empty() {
            String::new()
        } else {
            format!(" ({})", ejected.join(", "))
        }
    ));
    s.line(format!(
        "final answers by endpoint: {}",
        served
            .iter()
            .map(|(pod, n)| format!("{pod} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s.expect(
        ok == RETRY_REQUESTS,
        format!(
            "only {ok}/{RETRY_REQUESTS} POSTs succeeded despite retries{}",
            outcomes
                .iter()
                .find(|o| !o.as_ref().is_ok_and(|r| r.status == 200))
                .map(|o| format!(" (first failure: {})", describe(o)))
                .unwrap_or_default()
        ),
    );
    s.expect(!retried.is_empty(), "no request was retried".into());
    s.expect(
        ejections >= 1,
        "the failing endpoint was never ejected".into(),
    );

    let reqs = (0..OVERFLOW_REQUESTS)
        .map(|i| {
            with_id(Request::post("/api/payments/charge"), "demo-overflow", i)
                .header("x-testapp-delay-ms", "1500")
        })
        .collect();
    let outcomes = burst(&via, reqs, OVERFLOW_REQUESTS).await;
    let ok2 = outcomes
        .iter()
        .filter(|o| o.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    let overloaded = outcomes
        .iter()
        .filter(|o| {
            o.as_ref()
                .is_ok_and(|r| r.status == 503 && r.header("x-envoy-overloaded").is_some())
        })
        .count();
    let log = observe::waypoint_entries(&mesh.log("waypoint", "out"));
    let uo = log
        .iter()
        .filter(|e| {
            e.request_id.starts_with("demo-overflow-")
                && e.response_code == 503
                && e.response_flags.split(',').any(|f| f == "UO")
        })
        .count();
    s.line(format!(
        "{OVERFLOW_REQUESTS} concurrent slow POSTs: {ok2} answered 200, {overloaded} got 503 x-envoy-overloaded, access log: {uo} × 503 UO"
    ));
    s.expect(
        uo >= 1,
        "no request overflowed the connection pool (no 503 UO)".into(),
    );
    s.data = serde_json::json!({
        "retry": {"sent": RETRY_REQUESTS, "succeeded": ok, "retried": retried.len(), "extra_attempts": extra},
        "ejections": ejections,
        "ejected": ejected,
        "answered_by": served,
        "overflow": {"sent": OVERFLOW_REQUESTS, "ok": ok2, "overloaded_503": overloaded, "uo_in_access_log": uo},
    });
    s
}
