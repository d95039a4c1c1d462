//! `meshwork top`: the graph as plain-text tables (per service, per edge, per proxy).

use std::fmt::Write;

use crate::graph::{Edge, Graph, Protocol, ProxyKind};

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "-".into(),
    }
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.1}%", v * 100.0),
        _ => "-".into(),
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Tcp => "tcp",
    }
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn rate_unit(e: &Edge) -> &'static str {
    match e.protocol {
        Protocol::Http => "req/s",
        Protocol::Tcp => "conn/s",
    }
}

/// The whole picture as text: a services table, an edges table, the proxies' state.
pub fn render(g: &Graph) -> String {
    let mut out = String::new();
    match g.window_secs {
        Some(w) => {
            let _ = writeln!(out, "rates over the last {w:.1}s");
        }
        None => out.push_str("first scrape: rates appear after the next one\n"),
    }
    out.push_str("\nSERVICES\n");
    let rows: Vec<Vec<String>> = g
        .services
        .iter()
        .map(|s| {
            vec![
                s.service.clone(),
                proto(s.protocol).into(),
                num(s.rate, 2),
                pct(s.success),
                num(s.p50_ms, 1),
                num(s.p99_ms, 1),
                s.mtls.as_str().into(),
                format!("{} ({} total)", num(s.denials, 0), s.denials_total),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SERVICE", "PROTO", "RATE/s", "SUCCESS", "P50ms", "P99ms", "MTLS", "DENIED",
        ],
        &rows,
    ));
    out.push_str("\nEDGES\n");
    let rows: Vec<Vec<String>> = g
        .edges
        .iter()
        .map(|e| {
            vec![
                e.source.clone(),
                e.destination.clone(),
                e.services.join(","),
                proto(e.protocol).into(),
                format!("{} {}", num(e.rate, 2), rate_unit(e)),
                pct(e.success),
                num(e.p50_ms, 1),
                num(e.p99_ms, 1),
                e.mtls.as_str().into(),
                format!("{}/{}", num(e.received_bps, 0), num(e.sent_bps, 0)),
                format!("{} ({} total)", num(e.denials, 0), e.denials_total),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SOURCE",
            "DESTINATION",
            "SERVICE",
            "PROTO",
            "RATE",
            "SUCCESS",
            "P50ms",
            "P99ms",
            "MTLS",
            "B/s IN/OUT",
            "DENIED",
        ],
        &rows,
    ));
    let waypoints: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.kind == crate::graph::NodeKind::Waypoint)
        .map(|n| n.id.as_str())
        .collect();
    if !waypoints.is_empty() {
        let _ = writeln!(out, "\nwaypoints: {}", waypoints.join(", "));
    }
    out.push_str("\nPROXIES\n");
    let rows: Vec<Vec<String>> = g
        .proxies
        .iter()
        .map(|p| {
            vec![
                p.name.clone().unwrap_or_else(|| "-".into()),
                p.url.clone(),
                match p.kind {
                    ProxyKind::Ztunnel => "ztunnel",
                    ProxyKind::Waypoint => "waypoint",
                    ProxyKind::Idle => "idle",
                    ProxyKind::Down => "down",
                }
                .into(),
                p.series.to_string(),
                format!("{:.1}", p.scrape_ms),
                p.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["NAME", "URL", "KIND", "SERIES", "SCRAPEms", "ERROR"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxyz  1\nq    22\n");
    }
}
