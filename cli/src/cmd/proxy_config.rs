//! `meshwork proxy-config <ztunnel|waypoint> --admin URL [SECTION]`: what a running proxy
//! has, read from its admin endpoint.
//!
//! ztunnel serves `/config_dump` and `/certs` as JSON (workloads, services, policies,
//! certificates). The waypoint serves `/config_dump?format=json` (the model resource keys
//! and versions it holds, and its route configs in full), `/clusters` (upstream clusters with
//! pool occupancy and limits, and their endpoints with health and outlier-ejection state) and
//! `/certs` (the certificate it presents). A waypoint too old for the JSON views answers
//! `/config_dump` as text (`version N`, then `key version` lines): the command then lists the
//! keys and says what that waypoint does not expose.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use clap::ValueEnum;
use serde_json::{json, Value};

use crate::admin_client::{get_json, get_text};
use crate::output::{print_structured, Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proxy {
    Ztunnel,
    Waypoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Section {
    Workloads,
    Services,
    Policies,
    Certs,
    Routes,
    Endpoints,
    #[default]
    All,
}

impl Section {
    const EACH: [Section; 6] = [
        Section::Workloads,
        Section::Services,
        Section::Policies,
        Section::Certs,
        Section::Routes,
        Section::Endpoints,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Workloads => "workloads",
            Section::Services => "services",
            Section::Policies => "policies",
            Section::Certs => "certs",
            Section::Routes => "routes",
            Section::Endpoints => "endpoints",
            Section::All => "all",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which kind of proxy the admin address belongs to.
    #[arg(value_enum)]
    pub proxy: Proxy,
    /// What to show.
    #[arg(value_enum, default_value_t)]
    pub section: Section,
    /// The proxy's admin address, e.g. http://127.0.0.1:15000.
    #[arg(long)]
    pub admin: String,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

/// One section: structured data, and the human rendering of it.
struct Shown {
    data: Value,
    human: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sections: Vec<Section> = match args.section {
        Section::All => Section::EACH.to_vec(),
        s => vec![s],
    };
    let shown = match args.proxy {
        Proxy::Ztunnel => ztunnel(&args.admin, &sections).await?,
        Proxy::Waypoint => waypoint(&args.admin, &sections).await?,
    };
    match args.output {
        Format::Human => {
            for (i, (s, sh)) in shown.iter().enumerate() {
                if sections.len() > 1 {
                    if i > 0 {
                        println!();
                    }
                    println!("== {}", s.name());
                }
                print!("{}", sh.human);
            }
        }
        f => {
            let obj: serde_json::Map<String, Value> = shown
                .into_iter()
                .map(|(s, sh)| (s.name().to_string(), sh.data))
                .collect();
            print_structured(f, &Value::Object(obj))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn ztunnel(admin: &str, sections: &[Section]) -> anyhow::Result<Vec<(Section, Shown)>> {
    let dump = get_json(admin, "/config_dump").await?;
    let certs = if sections.contains(&Section::Certs) {
        get_json(admin, "/certs").await?
    } else {
        Value::Null
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    Ok(sections
        .iter()
        .map(|s| (*s, ztunnel_section(*s, &dump, &certs, now)))
        .collect())
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) if x.is_empty() => "-".into(),
        Value::String(x) => x.clone(),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(s).collect();
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(",")
            }
        }
        other => other.to_string(),
    }
}

fn ztunnel_section(sec: Section, dump: &Value, certs: &Value, now: u64) -> Shown {
    match sec {
        Section::Workloads => {
            let rows = list(&dump["workloads"])
                .iter()
                .map(|w| {
                    [
                        "workload",
                        "node",
                        "addresses",
                        "identity",
                        "waypoint",
                        "mtls_mode",
                    ]
                    .iter()
                    .map(|k| s(&w[*k]))
                    .chain([s(&w["healthy"]), s(&w["local"])])
                    .collect()
                })
                .collect();
            Shown {
                data: dump["workloads"].clone(),
                human: table(
                    &[
                        "WORKLOAD",
                        "NODE",
                        "ADDRESSES",
                        "IDENTITY",
                        "WAYPOINT",
                        "MTLS",
                        "HEALTHY",
                        "LOCAL",
                    ],
                    rows,
                ),
            }
        }
        Section::Services => {
            let rows = list(&dump["services"])
                .iter()
                .map(|svc| {
                    let ports: Vec<String> = list(&svc["ports"])
                        .iter()
                        .map(|p| format!("{}->{}", p["port"], p["target_port"]))
                        .collect();
                    vec![
                        s(&svc["hostname"]),
                        s(&svc["vips"]),
                        if ports.is_empty() {
                            "-".into()
                        } else {
                            ports.join(",")
                        },
                        s(&svc["waypoint"]),
                    ]
                })
                .collect();
            Shown {
                data: dump["services"].clone(),
                human: table(&["SERVICE", "VIPS", "PORTS", "WAYPOINT"], rows),
            }
        }
        Section::Policies => {
            let rows = list(&dump["authorizations"])
                .iter()
                .map(|p| vec![s(p)])
                .collect();
            Shown {
                data: dump["authorizations"].clone(),
                human: table(&["POLICY"], rows),
            }
        }
        Section::Certs => certs_section(certs, now),
        Section::Routes => not_exposed("ztunnel is L4 only: HTTP routes live in the waypoint"),
        Section::Endpoints => not_exposed(
            "ztunnel does not expose per-endpoint state; see workloads (HEALTHY) instead",
        ),
        Section::All => not_exposed("all is not a single section"),
    }
}

/// `/certs` of either proxy: identity, serial and expiry; the PEM chains are left out.
fn certs_section(certs: &Value, now: u64) -> Shown {
    let items = list(&certs["certificates"]);
    let rows = items
        .iter()
        .map(|c| {
            let not_after = c["not_after"].as_u64().unwrap_or(0);
            vec![
                s(&c["identity"]),
                s(&c["serial"]),
                rfc3339(not_after),
                expires_in(not_after, now),
                rfc3339(c["renew_at"].as_u64().unwrap_or(0)),
            ]
        })
        .collect();
    // The PEM chains are long; structured output keeps everything but them.
    let data = items
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(o) = c.as_object_mut() {
                o.remove("chain_pem");
            }
            c
        })
        .collect();
    Shown {
        data: Value::Array(data),
        human: table(
            &["IDENTITY", "SERIAL", "NOT AFTER", "EXPIRES IN", "RENEW AT"],
            rows,
        ),
    }
}

fn not_exposed(why: &str) -> Shown {
    Shown {
        data: json!({ "available": false, "reason": why }),
        human: format!("({why})\n"),
    }
}

/// `(key, version)` lines after the `version N` header of the waypoint's `/config_dump`.
fn parse_waypoint_dump(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if !header.starts_with("version ") {
        return Err(anyhow!(
            "expected a `version N` first line (is this a waypoint admin address?), got {header:?}"
        ));
    }
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect())
}

/// What the waypoint's admin endpoint answered.
enum WaypointDump {
    /// The JSON views: `/config_dump?format=json`, `/clusters` and `/certs` (the last two
    /// fetched only when a section needs them).
    Json {
        dump: Value,
        clusters: Value,
        certs: Value,
    },
    /// An older waypoint: `/config_dump` as text, keys only.
    Text(Vec<(String, String)>),
}

async fn waypoint(admin: &str, sections: &[Section]) -> anyhow::Result<Vec<(Section, Shown)>> {
    let text = get_text(admin, "/config_dump?format=json").await?;
    let source = match serde_json::from_str::<Value>(&text) {
        Ok(dump) => {
            let clusters = if sections.contains(&Section::Endpoints) {
                get_json(admin, "/clusters").await?
            } else {
                Value::Null
            };
            let certs = if sections.contains(&Section::Certs) {
                get_json(admin, "/certs").await?
            } else {
                Value::Null
            };
            WaypointDump::Json {
                dump,
                clusters,
                certs,
            }
        }
        Err(_) => WaypointDump::Text(
            parse_waypoint_dump(&text)
                .with_context(|| format!("{}/config_dump", admin.trim_end_matches('/')))?,
        ),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    Ok(sections
        .iter()
        .map(|s| (*s, waypoint_section(*s, &source, now)))
        .collect())
}

fn waypoint_section(sec: Section, source: &WaypointDump, now: u64) -> Shown {
    let keys: Vec<(String, String)> = match source {
        WaypointDump::Text(keys) => keys.clone(),
        WaypointDump::Json { dump, .. } => list(&dump["resources"])
            .iter()
            .map(|r| (s(&r["key"]), s(&r["version"])))
            .collect(),
    };
    let prefix = match sec {
        Section::Workloads => "workload/",
        Section::Services => "service/",
        Section::Policies => "authz/",
        Section::All => return not_exposed("all is not a single section"),
        Section::Routes | Section::Certs | Section::Endpoints => {
            let WaypointDump::Json {
                dump,
                clusters,
                certs,
            } = source
            else {
                if sec == Section::Routes {
                    return key_table(&keys, "route/");
                }
                return not_exposed(
                    "this waypoint's admin endpoint predates /clusters and /certs (no JSON config dump)",
                );
            };
            return match sec {
                Section::Routes => routes_section(&dump["routes"]),
                Section::Endpoints => endpoints_section(&clusters["clusters"]),
                _ => certs_section(certs, now),
            };
        }
    };
    key_table(&keys, prefix)
}

/// The resource keys under `prefix`, with their versions.
fn key_table(keys: &[(String, String)], prefix: &str) -> Shown {
    let picked: Vec<(&str, &str)> = keys
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
        .collect();
    Shown {
        data: Value::Array(
            picked
                .iter()
                .map(|(k, v)| json!({ "name": k, "version": v }))
                .collect(),
        ),
        human: table(
            &["NAME", "VERSION"],
            picked
                .iter()
                .map(|(k, v)| vec![k.to_string(), v.to_string()])
                .collect(),
        ),
    }
}

/// `kind=value` of a model `StringMatch` (`{"match": {"prefix": "/x"}}`), or `present`.
fn string_match(v: &Value) -> String {
    if let Some((k, val)) = v["match"].as_object().and_then(|m| m.iter().next()) {
        return format!(
            "{k}={}",
            val.as_str().map_or_else(|| val.to_string(), str::to_string)
        );
    }
    if v["present"] == true {
        return "present".into();
    }
    "*".into()
}

/// One line per route match: `uri=prefix=/a method=exact=GET header[x]=exact=1 port=80`.
fn match_summary(matches: &[Value]) -> String {
    if matches.is_empty() {
        return "*".into();
    }
    let one = |m: &Value| {
        let mut parts = Vec::new();
        for f in ["uri", "method", "authority", "scheme"] {
            if m[f].is_object() {
                parts.push(format!("{f}:{}", string_match(&m[f])));
            }
        }
        for f in ["headers", "queryParams", "withoutHeaders"] {
            if let Some(h) = m[f].as_object() {
                for (name, sm) in h {
                    parts.push(format!("{f}[{name}]:{}", string_match(sm)));
                }
            }
        }
        if m["port"].as_u64().unwrap_or(0) != 0 {
            parts.push(format!("port:{}", m["port"]));
        }
        if parts.is_empty() {
            "*".to_string()
        } else {
            parts.join(" ")
        }
    };
    matches.iter().map(one).collect::<Vec<_>>().join(" | ")
}

/// `host:port/subset weight` per destination, or what the route does instead of forwarding.
fn destinations(r: &Value) -> String {
    if r["redirect"].is_object() {
        return "redirect".into();
    }
    if r["directResponse"].is_object() {
        return format!("direct {}", s(&r["directResponse"]["status"]));
    }
    let dests: Vec<String> = list(&r["route"])
        .iter()
        .map(|wd| {
            let d = &wd["destination"];
            let mut out = s(&d["host"]);
            if d["port"].as_u64().unwrap_or(0) != 0 {
                out.push_str(&format!(":{}", d["port"]));
            }
            if d["subset"].as_str().is_some_and(|x| !x.is_empty()) {
                out.push_str(&format!("/{}", s(&d["subset"])));
            }
            format!("{out} {}", wd["weight"].as_u64().unwrap_or(0))
        })
        .collect();
    if dests.is_empty() {
        "-".into()
    } else {
        dests.join(", ")
    }
}

fn routes_section(routes: &Value) -> Shown {
    let mut rows = Vec::new();
    for rc in list(routes) {
        let hostname = s(&rc["hostname"]);
        let host = match meshwork_model::rules::gateway_of_host(&hostname) {
            // Routes bound to a waypoint Gateway (`route/<ns>/gateway~<name>`).
            Some(gw) => format!("Gateway {}/{gw}", s(&rc["namespace"])),
            None => format!("{}/{hostname}", s(&rc["namespace"])),
        };
        let http = list(&rc["http"]);
        if http.is_empty() {
            // A DestinationRule alone: traffic policy and subsets, default routing.
            rows.push(vec![
                host.clone(),
                "(default)".into(),
                "*".into(),
                "-".into(),
                s(&rc["origins"]),
            ]);
        }
        for r in http {
            rows.push(vec![
                host.clone(),
                s(&r["name"]),
                match_summary(list(&r["matches"])),
                destinations(r),
                s(&r["origin"]),
            ]);
        }
    }
    Shown {
        data: routes.clone(),
        human: table(&["HOST", "ROUTE", "MATCH", "DESTINATIONS", "ORIGIN"], rows),
    }
}

fn endpoints_section(clusters: &Value) -> Shown {
    let mut rows = Vec::new();
    for c in list(clusters) {
        let pool = &c["pool"];
        let occupancy = format!(
            "{}c {}p {}a",
            pool["connections"].as_u64().unwrap_or(0),
            pool["pending_requests"].as_u64().unwrap_or(0),
            pool["active_requests"].as_u64().unwrap_or(0),
        );
        for e in list(&c["endpoints"]) {
            let o = &e["outlier"];
            let returns = o["ejected_for_ms"]
                .as_u64()
                .map(|ms| format!("{}s", ms.div_ceil(1000)))
                .unwrap_or_else(|| "-".into());
            rows.push(vec![
                s(&c["name"]),
                s(&e["address"]),
                s(&e["workload"]),
                s(&e["health"]),
                o["ejections"].as_u64().unwrap_or(0).to_string(),
                returns,
                s(&e["active_requests"]),
                occupancy.clone(),
            ]);
        }
    }
    Shown {
        data: clusters.clone(),
        human: table(
            &[
                "CLUSTER",
                "ENDPOINT",
                "WORKLOAD",
                "HEALTH",
                "EJECTIONS",
                "RETURNS IN",
                "ACTIVE",
                "POOL",
            ],
            rows,
        ),
    }
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return "(none)\n".into();
    }
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn expires_in(not_after: u64, now: u64) -> String {
    if not_after <= now {
        return "EXPIRED".into();
    }
    let left = not_after - now;
    match left {
        l if l >= 86_400 => format!("{}d{}h", l / 86_400, l % 86_400 / 3600),
        l if l >= 3600 => format!("{}h{}m", l / 3600, l % 3600 / 60),
        l => format!("{}m{}s", l / 60, l % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_651_199), "2026-11-25T23:59:59Z");
    }

    #[test]
    fn expiry_is_relative_to_now() {
        assert_eq!(expires_in(100, 100), "EXPIRED");
        assert_eq!(expires_in(100 + 90, 100), "1m30s");
        assert_eq!(expires_in(100 + 7_260, 100), "2h1m");
        assert_eq!(expires_in(100 + 90_000, 100), "1d1h");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "BB"],
            vec![
                vec!["long-value".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A           BB\nlong-value  x\ny           z\n");
        assert_eq!(table(&["A"], vec![]), "(none)\n");
    }

    #[test]
    fn waypoint_text_dump_by_section() {
        let keys = parse_waypoint_dump(
            "version 7\nworkload/prod/a v1\nroute/prod/a.prod.svc v2\nauthz/prod/p v3\n",
        )
        .unwrap();
        let src = WaypointDump::Text(keys);
        let r = waypoint_section(Section::Routes, &src, 0);
        assert_eq!(r.human, "NAME             VERSION\nprod/a.prod.svc  v2\n");
        assert_eq!(
            r.data,
            json!([{"name": "prod/a.prod.svc", "version": "v2"}])
        );
        let c = waypoint_section(Section::Certs, &src, 0);
        assert_eq!(c.data["available"], false);
        let e = waypoint_section(Section::Endpoints, &src, 0);
        assert_eq!(e.data["available"], false);
        assert!(parse_waypoint_dump("{\"json\": 1}").is_err());
    }

    fn json_source() -> WaypointDump {
        WaypointDump::Json {
            dump: json!({
                "version": 4,
                "resources": [{"key": "service/prod/pay.prod.svc.cluster.local", "version": "v9"}],
                "routes": [{
                    "hostname": "pay.prod.svc.cluster.local", "namespace": "prod",
                    "origins": ["VirtualService/prod/pay"],
                    "http": [{
                        "name": "canary",
                        "matches": [{"headers": {"x-canary": {"match": {"exact": "true"}, "present": false}}}],
                        "route": [{"destination": {"host": "pay.prod.svc.cluster.local", "subset": "v2", "port": 0}, "weight": 100}],
                        "origin": "VirtualService/prod/pay"
                    }, {
                        "name": "rule-1",
                        "matches": [{"uri": {"match": {"prefix": "/api"}, "present": false}, "port": 80}],
                        "route": [
                            {"destination": {"host": "pay.prod.svc.cluster.local", "subset": "v1", "port": 80}, "weight": 90},
                            {"destination": {"host": "pay.prod.svc.cluster.local", "subset": "v2", "port": 80}, "weight": 10}
                        ],
                        "origin": "VirtualService/prod/pay"
                    }]
                }, {
                    "hostname": "db.prod.svc.cluster.local", "namespace": "prod",
                    "origins": ["DestinationRule/prod/db"], "http": []
                }, {
                    "hostname": "gateway~waypoint", "namespace": "prod",
                    "origins": ["HTTPRoute/prod/beta"],
                    "http": [{"name": "rule-0", "matches": [{"authority": {"match": {"regex": "(?i:pay)(?::[0-9]+)?"}, "present": false}}],
                        "route": [{"destination": {"host": "pay-beta.prod.svc.cluster.local", "subset": "", "port": 80}, "weight": 1}],
                        "origin": "HTTPRoute/prod/beta"}]
                }]
            }),
            clusters: json!({"clusters": [{
                "name": "outbound|80||pay.prod.svc.cluster.local",
                "pool": {"connections": 2, "pending_requests": 1, "active_requests": 3},
                "endpoints": [
                    {"address": "10.0.0.1:8080", "workload": "prod/pay-0", "health": "EJECTED",
                     "active_requests": 0,
                     "outlier": {"ejected": true, "ejected_for_ms": 54_500, "ejections": 2}},
                    {"address": "10.0.0.2:8080", "workload": "prod/pay-1", "health": "HEALTHY",
                     "active_requests": 3,
                     "outlier": {"ejected": false, "ejections": 0}}
                ]
            }]}),
            certs: json!({"certificates": [{"identity": "spiffe://cluster.local/ns/prod/sa/waypoint",
                "serial": "0a", "not_before": 0, "not_after": 7_200, "renew_at": 3_600,
                "chain_pem": "PEM"}]}),
        }
    }

    #[test]
    fn waypoint_json_routes_endpoints_and_certs() {
        let src = json_source();
        let r = waypoint_section(Section::Routes, &src, 0);
        let lines: Vec<&str> = r.human.lines().collect();
        assert!(lines[0].starts_with("HOST"), "{}", r.human);
        assert!(
            lines[1].contains("canary")
                && lines[1].contains("headers[x-canary]:exact=true")
                && lines[1].contains("pay.prod.svc.cluster.local/v2 100"),
            "{}",
            r.human
        );
        assert!(
            lines[2].contains("uri:prefix=/api port:80")
                && lines[2].contains(
                    "pay.prod.svc.cluster.local:80/v1 90, pay.prod.svc.cluster.local:80/v2 10"
                ),
            "{}",
            r.human
        );
        assert!(lines[3].contains("(default)") && lines[3].contains("DestinationRule/prod/db"));
        assert!(
            lines[4].starts_with("Gateway prod/waypoint")
                && lines[4].contains("authority:regex=(?i:pay)(?::[0-9]+)?")
                && lines[4].contains("pay-beta.prod.svc.cluster.local:80 1"),
            "{}",
            r.human
        );
        assert_eq!(r.data[0]["http"][0]["name"], "canary");

        let e = waypoint_section(Section::Endpoints, &src, 0);
        let lines: Vec<&str> = e.human.lines().collect();
        assert!(lines[0].starts_with("CLUSTER"), "{}", e.human);
        assert!(
            lines[1].contains("10.0.0.1:8080")
                && lines[1].contains("EJECTED")
                && lines[1].contains("  2  ")
                && lines[1].contains("55s")
                && lines[1].ends_with("2c 1p 3a"),
            "{}",
            e.human
        );
        assert!(lines[2].contains("HEALTHY"), "{}", e.human);
        assert_eq!(e.data[0]["endpoints"][0]["health"], "EJECTED");

        let c = waypoint_section(Section::Certs, &src, 0);
        assert!(c
            .human
            .contains("spiffe://cluster.local/ns/prod/sa/waypoint"));
        assert!(c.human.contains("2h0m"), "{}", c.human);
        assert!(c.data[0].get("chain_pem").is_none());

        let sv = waypoint_section(Section::Services, &src, 0);
        assert_eq!(
            sv.human,
            "NAME                             VERSION\nprod/pay.prod.svc.cluster.local  v9\n"
        );
    }

    #[test]
    fn ztunnel_sections_read_the_dump() {
        let dump = json!({
            "workloads": [{"workload": "prod/a", "node": "n1", "addresses": ["10.0.0.1"],
                "identity": "spiffe://cluster.local/ns/prod/sa/a", "waypoint": null,
                "mtls_mode": "Strict", "healthy": true, "local": true}],
            "services": [{"hostname": "a.prod.svc.cluster.local", "vips": ["10.96.0.1"],
                "ports": [{"port": 80, "target_port": 8080}], "waypoint": null}],
            "authorizations": ["prod/deny"],
        });
        let certs = json!({"certificates": [{"identity": "spiffe://cluster.local/ns/prod/sa/a",
            "serial": "ab", "not_before": 0, "not_after": 3_600, "renew_at": 1_800,
            "chain_pem": "PEM"}]});
        let w = ztunnel_section(Section::Workloads, &dump, &certs, 0);
        assert!(w.human.contains("prod/a    n1    10.0.0.1"), "{}", w.human);
        let sv = ztunnel_section(Section::Services, &dump, &certs, 0);
        assert!(sv.human.contains("80->8080"), "{}", sv.human);
        let c = ztunnel_section(Section::Certs, &dump, &certs, 0);
        assert!(
            c.human
                .contains("1970-01-01T01:00:00Z  1h0m        1970-01-01T00:30:00Z"),
            "{}",
            c.human
        );
        assert!(c.data[0].get("chain_pem").is_none());
        let p = ztunnel_section(Section::Policies, &dump, &certs, 0);
        assert_eq!(p.human, "POLICY\nprod/deny\n");
    }
}
