//! (2) Traffic management: canary header, user-id A/B, weighted split, retries, timeout.

use super::*;

/// (2) canary header, user-id A/B, weighted split.
pub async fn traffic(mesh: &Mesh) -> Section {
    progress(&format!(
        "pattern 2: canary header, x-user-id, {SPLIT_REQUESTS} requests for the 90/10 split"
    ));
    let mut s = Section::new(2, "traffic management (02-order-traffic.yaml)");
    let via = mesh.via("order-client", "order-service");
    let canary = Versions::of(
        &burst(
            &via,
            vec![Request::get("/api/orders").header("x-canary", "true"); HEADER_REQUESTS],
            CONCURRENCY,
        )
        .await,
    );
    let even: Vec<Request> = (0..HEADER_REQUESTS)
        .map(|i| Request::get("/api/orders").header("x-user-id", &(1000 + 2 * i).to_string()))
        .collect();
    let even = Versions::of(&burst(&via, even, CONCURRENCY).await);
    let split = Versions::of(
        &burst(
            &via,
            vec![Request::get("/api/orders"); SPLIT_REQUESTS],
            CONCURRENCY,
        )
        .await,
    );
    let failing: Vec<Request> = (0..RETRY_PROBES)
        .map(|i| {
            with_id(Request::get("/api/orders"), "demo-order-retry", i)
                .header("x-testapp-fail", "503")
        })
        .collect();
    let failing = burst(&via, failing, RETRY_PROBES).await;
    let log = observe::waypoint_entries(&mesh.log("waypoint", "out"));
    let tries: Vec<u32> = log
        .iter()
        .filter(|e| e.request_id.starts_with("demo-order-retry-"))
        .map(|e| e.attempts)
        .collect();
    let final_503 = failing
        .iter()
        .filter(|o| o.as_ref().is_ok_and(|r| r.status == 503))
        .count();
    s.line(format!(
        "{RETRY_PROBES} requests failing on every try: tried {} time(s) each by the waypoint, {final_503} ended in 503",
        render_counts(&tries)
    ));
    s.expect(
        tries.len() == RETRY_PROBES && tries.iter().all(|t| *t == 4),
        format!(
            "retryOn 5xx with attempts: 3 should try 4 times, the waypoint logged tries {tries:?}"
        ),
    );
    s.line(format!(
        "x-canary: true      → v2 {}/{} ({:.0}%)",
        canary.count("v2"),
        HEADER_REQUESTS,
        canary.pct("v2")
    ));
    s.line(format!(
        "x-user-id even      → v2 {}/{} ({:.0}%)",
        even.count("v2"),
        HEADER_REQUESTS,
        even.pct("v2")
    ));
    s.line(format!(
        "no header           → v1 {:.1}% / v2 {:.1}% over {} answers ({} failed)",
        split.pct("v1"),
        split.pct("v2"),
        split.answered(),
        split.failed
    ));
    s.expect(
        canary.count("v2") == HEADER_REQUESTS,
        format!("canary: {:?}, {} failed", canary.by_version, canary.failed),
    );
    s.expect(
        even.count("v2") == HEADER_REQUESTS,
        format!(
            "even x-user-id: {:?}, {} failed",
            even.by_version, even.failed
        ),
    );
    s.expect(
        split.failed == 0 && (split.pct("v2") - 10.0).abs() <= 5.0,
        format!(
            "default split: {:?} ({} failed), expected ≈90/10",
            split.by_version, split.failed
        ),
    );
    // One cause line for the section rather than one per probe.
    if let Some(e) = [&canary, &even, &split]
        .iter()
        .find_map(|v| v.first_error.clone())
    {
        s.expect(
            false,
            format!("first failure: {e}{}", ztunnel_failure(mesh)),
        );
    }
    s.data = serde_json::json!({
        "canary": {"sent": HEADER_REQUESTS, "v2": canary.count("v2"), "failed": canary.failed},
        "even_user_id": {"sent": HEADER_REQUESTS, "v2": even.count("v2"), "failed": even.failed},
        "retry": {"sent": RETRY_PROBES, "tries": tries, "final_503": final_503},
        "split": {
            "sent": SPLIT_REQUESTS,
            "v1": split.count("v1"),
            "v2": split.count("v2"),
            "failed": split.failed,
            "v1_pct": split.pct("v1"),
            "v2_pct": split.pct("v2"),
        },
    });
    s
}

/// What a request slower than the route timeout got, and after how long.
pub struct TimeoutProbe {
    pub outcome: Outcome,
    pub elapsed: Duration,
}

/// One request whose app answers after 12 s (route timeout 10 s); run alongside the other
/// patterns so the wait costs nothing.
pub async fn timeout_probe(mesh: &Mesh) -> TimeoutProbe {
    let started = std::time::Instant::now();
    let req = with_id(Request::get("/api/orders"), "demo-timeout", 0)
        .header("x-testapp-delay-ms", "12000");
    let outcome = http::send(
        &mesh.via("order-client", "order-service"),
        &req,
        Duration::from_secs(20),
    )
    .await;
    TimeoutProbe {
        outcome,
        elapsed: started.elapsed(),
    }
}

/// Adds the timeout probe's result to the traffic section.
pub fn add_timeout(s: &mut Section, mesh: &Mesh, probe: &TimeoutProbe) {
    let status = probe.outcome.as_ref().map(|r| r.status).ok();
    let flags = observe::waypoint_entries(&mesh.log("waypoint", "out"))
        .into_iter()
        .find(|e| e.request_id == "demo-timeout-0")
        .map(|e| e.response_flags)
        .unwrap_or_default();
    s.line(format!(
        "a request the app answers after 12 s: {} after {:.1} s (response flags {})",
        match &probe.outcome {
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => e.to_string(),
        },
        probe.elapsed.as_secs_f64(),
        if flags.is_empty() { "-" } else { &flags }
    ));
    s.expect(
        status == Some(504) && probe.elapsed < Duration::from_secs(12),
        "timeout: expected 504 after ≈10 s".into(),
    );
    if let Some(data) = s.data.as_object_mut() {
        data.insert(
            "timeout".into(),
            serde_json::json!({
                "status": status,
                "elapsed_ms": probe.elapsed.as_millis() as u64,
                "response_flags": flags,
            }),
        );
    }
}
