//! Reading what the running mesh reports: waypoint access log lines, ztunnel access logs
//! and metrics, log lines about ejections.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The waypoint access log fields the demo uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WaypointEntry {
    pub method: String,
    pub path: String,
    pub response_code: u16,
    pub response_flags: String,
    pub response_code_details: String,
    pub upstream_host: String,
    pub source_principal: String,
    pub request_id: String,
    pub attempts: u32,
    pub authz_policy: String,
}

/// How long a log file must stay unchanged before it is read.
const QUIET: Duration = Duration::from_millis(100);
/// The longest wait for it.
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// The text of a process's log file once its writer has caught up. The proxies write
/// log lines from a thread of their own, a moment after the request they describe, so
/// the file is read only after it has not grown for [`QUIET`] (waiting
/// [`SETTLE_LIMIT`] at most).
pub fn read_settled(log: &Path) -> String {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut last = len(log);
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = len(log);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= QUIET {
            break;
        }
    }
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Every JSON access log line in the waypoint's stdout.
pub fn waypoint_entries(stdout: &Path) -> Vec<WaypointEntry> {
    read_settled(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// One ztunnel access log line (JSON tracing output, target `access`).
#[derive(Debug, Clone, Default)]
pub struct ZtunnelEntry {
    pub src_workload: String,
    pub dst_workload: String,
    pub src_identity: String,
    pub dst_identity: String,
    pub decision: String,
    pub error: String,
}

pub fn ztunnel_entries(stdout: &Path) -> Vec<ZtunnelEntry> {
    let text = read_settled(stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .map(|v| {
            let f = &v["fields"];
            let s = |k: &str| match &f[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            ZtunnelEntry {
                src_workload: s("src.workload"),
                dst_workload: s("dst.workload"),
                src_identity: s("src.identity"),
                dst_identity: s("dst.identity"),
                decision: s("decision"),
                error: s("error"),
            }
        })
        .collect()
}

/// `fields.<field>` of the last JSON log line whose message is `message`.
pub fn last_field(log: &Path, message: &str, field: &str) -> Option<String> {
    read_settled(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .filter_map(|v| v["fields"][field].as_str().map(String::from))
        .next_back()
}

/// `text` without ANSI colour sequences (`ESC [ … letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `key=value` value of `key` on each line of `log` containing `needle`.
pub fn field_on_lines(log: &Path, needle: &str, key: &str) -> Vec<String> {
    let text = strip_ansi(&read_settled(log));
    let prefix = format!("{key}=");
    text.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&prefix))
                .map(|v| v.trim_matches('"').to_string())
        })
        .collect()
}

/// Values of `label` on metric lines that also carry `connection_security_policy="mutual_tls"`.
pub fn mtls_label_values(metrics: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("connection_security_policy=\"mutual_tls\""))
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')? + start;
            Some(l[start..end].to_string())
        })
        .filter(|v| !v.is_empty() && v != "unknown")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_waypoint_and_ztunnel_lines_skipping_others() {
        let dir = tempfile::tempdir().unwrap();
        let wp = dir.path().join("wp.out");
        std::fs::write(
            &wp,
            "not json\n{\"method\":\"POST\",\"response_code\":503,\"response_flags\":\"UO\",\"attempts\":2,\"authz_policy\":\"ns/p\"}\n",
        )
        .unwrap();
        let e = waypoint_entries(&wp);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].response_code, e[0].attempts), (503, 2));
        assert_eq!(e[0].response_flags, "UO");
        let zt = dir.path().join("zt.out");
        std::fs::write(
            &zt,
            "{\"target\":\"meshwork\",\"fields\":{}}\n{\"target\":\"access\",\"fields\":{\"direction\":\"inbound\",\"src.identity\":\"spiffe://a\",\"dst.workload\":\"production/p-1\",\"decision\":\"deny\",\"bytes_sent\":3}}\n",
        )
        .unwrap();
        let z = ztunnel_entries(&zt);
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].src_identity, "spiffe://a");
        assert_eq!(z[0].src_workload, "");
        assert_eq!(z[0].decision, "deny");
        assert_eq!(z[0].dst_workload, "production/p-1");
        std::fs::write(
            &zt,
            "{\"fields\":{\"message\":\"outbound connection failed\",\"error\":\"first\"}}\n{\"fields\":{\"message\":\"outbound connection failed\",\"error\":\"400 Bad Request\"}}\n",
        )
        .unwrap();
        assert_eq!(
            last_field(&zt, "outbound connection failed", "error").as_deref(),
            Some("400 Bad Request")
        );
        assert_eq!(last_field(&zt, "other", "error"), None);
    }

    #[test]
    fn fields_from_coloured_log_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("wp.err");
        std::fs::write(
            &log,
            "\u{1b}[2mts\u{1b}[0m INFO outlier: host ejected \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.1.2.14:8080 ejections=1\nother addr=1.1.1.1:1\n",
        )
        .unwrap();
        assert_eq!(
            field_on_lines(&log, "host ejected", "addr"),
            vec!["127.1.2.14:8080".to_string()]
        );
        assert_eq!(strip_ansi("\u{1b}[1mbold\u{1b}[0m"), "bold");
    }

    #[test]
    fn mtls_principals_from_metrics() {
        let text = "# HELP x\nistio_tcp_connections_opened_total{reporter=\"destination\",source_principal=\"spiffe://cluster.local/ns/p/sa/a\",connection_security_policy=\"mutual_tls\"} 3\nistio_tcp_connections_opened_total{source_principal=\"spiffe://plain\",connection_security_policy=\"none\"} 1\n";
        let got = mtls_label_values(text, "source_principal");
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec!["spiffe://cluster.local/ns/p/sa/a".to_string()]
        );
    }
}
