//! (7) Wasm plugins: Istio `WasmPlugin`s run by the waypoint — the example auth-header plugin
//! (`examples/wasm-plugins`) deciding who gets through, and the trap plugin failing only the
//! requests that make it trap.
//!
//! The plugins attach to a Service of the demo's own, [`SERVICE`] (the order-service pods
//! under another name), so the seed patterns' traffic never meets them. The `.wasm` files
//! are the examples built for `wasm32-wasip1` (`scripts/demo` builds them), found by
//! [`plugin_dir`] and loaded by the waypoint from `file://` URLs.

use super::*;
use crate::cmd::demo::wasm_manifest::{plugin_dir, API_KEY, API_KEY_HEADER, DIR_ENV, SERVICE};

/// The auth-header plugin's own counter, as the waypoint exports it on `/metrics`.
const DENIED_METRIC: &str = "wasm_auth_header_denied_total";
/// Requests per case.
const WASM_REQUESTS: usize = 10;
const TRAP_REQUESTS: usize = 3;

/// Statuses of `outcomes` as `200 ×10` style counts (`error` for no answer).
fn statuses(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        let k = match o {
            Ok(r) => r.status.to_string(),
            Err(_) => "error".to_string(),
        };
        *m.entry(k).or_default() += 1;
    }
    m
}

fn render(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(s, n)| format!("{s} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of `name` (one sample, no labels) in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// (7) the example plugins at the waypoint: auth-header's decisions, trap's failures.
pub async fn wasm(mesh: &Mesh) -> Section {
    progress("pattern 7: Wasm plugins at the waypoint (auth-header, trap)");
    let mut s = Section::new(7, "Wasm plugins (WasmPlugin, examples/wasm-plugins)");
    let Some(dir) = plugin_dir() else {
        s.expect(
            false,
            format!(
                "the example plugins are not built: run scripts/demo, or `cargo build --release --target wasm32-wasip1` in examples/wasm-plugins and set {DIR_ENV} to its wasm32-wasip1/release directory"
            ),
        );
        return s;
    };
    let via = mesh.via("order-client", SERVICE);
    let get = |id: &str, i: usize| with_id(Request::get("/api/orders"), id, i);
    let keyed = |id: &str, i: usize| get(id, i).header(API_KEY_HEADER, API_KEY);
    let before = metric(
        &get_text(mesh.waypoint_admin(), "/metrics").await,
        DENIED_METRIC,
    )
    .unwrap_or(0.0);

    let without = burst(
        &via,
        (0..WASM_REQUESTS)
            .map(|i| get("demo-wasm-nokey", i))
            .collect(),
        CONCURRENCY,
    )
    .await;
    let denied_by_plugin = without
        .iter()
        .filter(|o| {
            o.as_ref()
                .is_ok_and(|r| r.status == 401 && r.header("x-denied-by") == Some("auth-header"))
        })
        .count();
    let wrong = burst(
        &via,
        (0..WASM_REQUESTS)
            .map(|i| get("demo-wasm-badkey", i).header(API_KEY_HEADER, "guess"))
            .collect(),
        CONCURRENCY,
    )
    .await;
    let with = burst(
        &via,
        (0..WASM_REQUESTS)
            .map(|i| keyed("demo-wasm-key", i))
            .collect(),
        CONCURRENCY,
    )
    .await;
    // One at a time: each trap is its own request, and the next keyed request shows the
    // instance was replaced.
    let trapped = burst(
        &via,
        (0..TRAP_REQUESTS)
            .map(|i| keyed("demo-wasm-trap", i).header("x-trap", "panic"))
            .collect(),
        1,
    )
    .await;
    let after = burst(
        &via,
        (0..WASM_REQUESTS)
            .map(|i| keyed("demo-wasm-after", i))
            .collect(),
        CONCURRENCY,
    )
    .await;
    let denied_metric = metric(
        &get_text(mesh.waypoint_admin(), "/metrics").await,
        DENIED_METRIC,
    )
    .map(|v| v - before);
    let log = observe::waypoint_entries(&mesh.log("waypoint", "out"));
    let fail_stream = log
        .iter()
        .filter(|e| {
            e.request_id.starts_with("demo-wasm-trap-")
                && e.response_code == 503
                && e.response_code_details == "wasm_fail_stream"
        })
        .count();

    let count = |o: &[Outcome], code: u16| {
        o.iter()
            .filter(|o| o.as_ref().is_ok_and(|r| r.status == code))
            .count()
    };
    let (s_without, s_wrong, s_with, s_trap, s_after) = (
        statuses(&without),
        statuses(&wrong),
        statuses(&with),
        statuses(&trapped),
        statuses(&after),
    );
    s.line(format!(
        "plugins from {}: api-key (auth-header, AUTHN, {API_KEY_HEADER}: {API_KEY}) and trap (FAIL_CLOSE), on Service {SERVICE}",
        dir.display()
    ));
    s.line(format!(
        "no {API_KEY_HEADER}: {} ({denied_by_plugin} with x-denied-by: auth-header); wrong key: {}; right key: {}",
        render(&s_without),
        render(&s_wrong),
        render(&s_with)
    ));
    s.line(format!(
        "the plugin's own counter {DENIED_METRIC} on the waypoint's /metrics: {}",
        denied_metric
            .map(|v| format!("+{v}"))
            .unwrap_or_else(|| "absent".into())
    ));
    s.line(format!(
        "x-trap: panic (one at a time): {} ({fail_stream} logged wasm_fail_stream); keyed requests after: {}",
        render(&s_trap),
        render(&s_after)
    ));
    let denied = 2 * WASM_REQUESTS;
    s.expect(
        denied_by_plugin == WASM_REQUESTS && count(&wrong, 401) == WASM_REQUESTS,
        format!(
            "requests without the right key were not all refused by the plugin: {} / {}",
            render(&s_without),
            render(&s_wrong)
        ),
    );
    s.expect(
        count(&with, 200) == WASM_REQUESTS,
        format!("keyed requests did not all pass: {}", render(&s_with)),
    );
    s.expect(
        denied_metric == Some(denied as f64),
        format!("{DENIED_METRIC} rose by {denied_metric:?}, expected {denied}"),
    );
    s.expect(
        count(&trapped, 503) == TRAP_REQUESTS && fail_stream == TRAP_REQUESTS,
        format!(
            "trapping requests were not each failed closed: {} ({fail_stream} wasm_fail_stream)",
            render(&s_trap)
        ),
    );
    s.expect(
        count(&after, 200) == WASM_REQUESTS,
        format!(
            "requests after the traps did not all pass: {}",
            render(&s_after)
        ),
    );
    s.data = serde_json::json!({
        "service": SERVICE,
        "without_key": s_without,
        "wrong_key": s_wrong,
        "with_key": s_with,
        "denied_by_plugin": denied_by_plugin,
        "denied_metric": denied_metric,
        "trap": s_trap,
        "trap_fail_stream": fail_stream,
        "after_trap": s_after,
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::demo::wasm_manifest::manifest;
    use std::path::Path;

    #[test]
    fn metric_reads_one_unlabelled_sample() {
        let page = "# TYPE wasm_auth_header_denied_total counter\nwasm_auth_header_denied_total 7\nwasm_auth_header_denied_total_x 1\n";
        assert_eq!(metric(page, DENIED_METRIC), Some(7.0));
        assert_eq!(metric("", DENIED_METRIC), None);
    }

    #[test]
    fn manifest_parses_with_and_without_plugins() {
        for dir in [None, Some(Path::new("/opt/plugins"))] {
            let (name, y) = manifest(dir);
            let parsed = meshwork_api::parse_file(Path::new(&name), &y, NAMESPACE);
            let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{y}");
            assert_eq!(parsed.objects().count(), if dir.is_some() { 3 } else { 1 });
        }
        let (_, y) = manifest(Some(Path::new("/opt/plugins")));
        assert!(
            y.contains("url: file:///opt/plugins/auth_header.wasm\n"),
            "{y}"
        );
        assert!(y.contains("url: file:///opt/plugins/trap.wasm\n"), "{y}");
    }
}
