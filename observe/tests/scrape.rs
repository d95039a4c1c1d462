//! Scraping real HTTP endpoints on loopback that serve the recorded proxy metrics, and the
//! `top` output (text and JSON) built from them; plus a timing of scrape + compute for a
//! large mesh (printed, not asserted).

mod common;

use std::fmt::Write;
use std::time::{Duration, Instant};

use common::{advance, fixture_proxies, FakeProxy};
use meshwork_observe::graph::{
    compute, wanted, Protocol, ProxyKind, Snapshot, Target, TargetScrape,
};
use meshwork_observe::parse::parse_filtered;
use meshwork_observe::{top, Monitor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_scrapes_proxies_and_top_shows_the_edges() {
    let proxies = fixture_proxies();
    let mut targets: Vec<Target> = proxies.iter().map(|p| Target::parse(&p.url())).collect();
    // A target nobody listens on: listed as down, the others still count.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/metrics", dead.local_addr().unwrap());
    drop(dead);
    targets.push(Target::parse(&dead_url));
    let mut m = Monitor::new(targets, Duration::from_secs(2));

    let first = m.step().await;
    assert_eq!(first.window_secs, None);
    assert!(top::render(&first).contains("first scrape"));
    advance(&proxies);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let g = m.step().await;
    let w = g.window_secs.expect("a window after two scrapes");
    assert!(w >= 0.2, "{w}");

    let e = g
        .edges
        .iter()
        .find(|e| e.destination == "production/order-v2" && e.protocol == Protocol::Http)
        .expect("frontend -> order-v2");
    // 50 requests between the scrapes, whatever the window: rate × window.
    assert!((e.rate.unwrap() * w - 50.0).abs() < 1e-6, "{e:?}");
    assert!((e.success.unwrap() - 0.9).abs() < 1e-9);
    assert!((e.p99_ms.unwrap() - 950.0).abs() < 1e-9);
    let kinds: Vec<ProxyKind> = g.proxies.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            ProxyKind::Ztunnel,
            ProxyKind::Ztunnel,
            ProxyKind::Waypoint,
            ProxyKind::Down
        ]
    );
    assert!(g.proxies[3]
        .error
        .as_deref()
        .is_some_and(|e| e.contains(&dead_url)));

    let text = top::render(&g);
    println!("{text}");
    for want in [
        "SERVICES",
        "order-service.production.svc.cluster.local  http",
        "90.0%",
        "950.0",
        "legacy/legacy-client",
        "waypoints: production/waypoint-0",
        "down",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let row = text
        .lines()
        .find(|l| l.starts_with("partners/partner-client"))
        .expect("denied edge row");
    assert!(row.contains("10 (12 total)"), "{row}");

    // --json is the graph itself.
    let json: serde_json::Value = serde_json::to_value(&g).unwrap();
    assert_eq!(json["edges"].as_array().unwrap().len(), 9);
    assert_eq!(json["proxies"][3]["kind"], "down");
    assert!(json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["id"] == "production/waypoint-0" && n["kind"] == "waypoint"));
}

/// A realistic proxy text: `n` label sets of the waypoint's request families (counter, the
/// 19-bucket duration histogram, request and response size histograms) or of the
/// ztunnel's four TCP counters.
fn synthetic(waypoint: bool, n: usize, scale: u64, seed: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let labels = format!(
            "reporter=\"{}\",source_workload=\"client-{}\",source_workload_namespace=\"ns-{}\",source_principal=\"spiffe://cluster.local/ns/ns-{}/sa/client-{}\",source_app=\"client\",source_version=\"v1\",destination_workload=\"server-{}\",destination_workload_namespace=\"ns-{}\",destination_principal=\"spiffe://cluster.local/ns/ns-{}/sa/server\",destination_app=\"server\",destination_version=\"v1\",destination_service=\"svc-{}.ns-{}.svc.cluster.local\",destination_service_namespace=\"ns-{}\",request_protocol=\"{}\",response_code=\"{}\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"",
            if waypoint { "waypoint" } else if i % 2 == 0 { "source" } else { "destination" },
            (i + seed) % 40, i % 7, i % 7, (i + seed) % 40,
            i % 30, i % 7, i % 7, i % 30, i % 7, i % 7,
            if waypoint { "http" } else { "tcp" },
            [200, 200, 200, 503, 404][i % 5],
        );
        let v = scale * (i as u64 + 1);
        if waypoint {
            let _ = writeln!(out, "istio_requests_total{{{labels}}} {v}");
            for fam in [
                "istio_request_duration_milliseconds",
                "istio_request_bytes",
                "istio_response_bytes",
            ] {
                let mut c = 0;
                for (k, le) in [
                    "0.5",
                    "1.0",
                    "5.0",
                    "10.0",
                    "25.0",
                    "50.0",
                    "100.0",
                    "250.0",
                    "500.0",
                    "1000.0",
                    "2500.0",
                    "5000.0",
                    "10000.0",
                    "30000.0",
                    "60000.0",
                    "300000.0",
                    "600000.0",
                    "1800000.0",
                    "3600000.0",
                    "+Inf",
                ]
                .iter()
                .enumerate()
                {
                    if k < 6 {
                        c += v / 6;
                    }
                    if *le == "+Inf" {
                        c = v;
                    }
                    let _ = writeln!(out, "{fam}_bucket{{{labels},le=\"{le}\"}} {c}");
                }
                let _ = writeln!(out, "{fam}_sum{{{labels}}} {}.0", v * 7);
                let _ = writeln!(out, "{fam}_count{{{labels}}} {v}");
            }
        } else {
            for fam in [
                "istio_tcp_connections_opened_total",
                "istio_tcp_connections_closed_total",
                "istio_tcp_sent_bytes_total",
                "istio_tcp_received_bytes_total",
            ] {
                let _ = writeln!(out, "{fam}{{{labels}}} {v}");
            }
        }
    }
    out
}

/// 100 proxies (90 ztunnels with 300 series each, 10 waypoints with 300 label sets each,
/// ~20,000 lines per waypoint) scraped over loopback and turned into the graph: the time
/// of one step is printed (not asserted: it depends on the machine and on the debug build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_scrape_and_compute_for_100_targets() {
    let proxies: Vec<FakeProxy> = (0..100)
        .map(|i| FakeProxy::start(&synthetic(i % 10 == 0, 300, 1, i)))
        .collect();
    let lines: usize = (0..100)
        .map(|i| synthetic(i % 10 == 0, 300, 1, i).lines().count())
        .sum();
    let targets = proxies.iter().map(|p| Target::parse(&p.url())).collect();
    let mut m = Monitor::new(targets, Duration::from_secs(10));
    let t0 = Instant::now();
    let g0 = m.step().await;
    let first = t0.elapsed();
    for (i, p) in proxies.iter().enumerate() {
        p.set(&synthetic(i % 10 == 0, 300, 2, i));
    }
    let t1 = Instant::now();
    let g = m.step().await;
    let second = t1.elapsed();
    let t2 = Instant::now();
    let json = serde_json::to_vec(&g).unwrap();
    let encode = t2.elapsed();
    let t3 = Instant::now();
    let text = meshwork_observe::top::render(&g);
    let render = t3.elapsed();
    assert!(
        g0.proxies.iter().all(|p| p.error.is_none()),
        "{:?}",
        g0.proxies
    );
    assert!(g.edges.iter().all(|e| e.rate.is_some()));
    assert!(!g.edges.is_empty() && !text.is_empty());
    // The CPU part alone: parsing every text and computing the graph.
    let texts: Vec<String> = (0..100)
        .map(|i| synthetic(i % 10 == 0, 300, 2, i))
        .collect();
    let t4 = Instant::now();
    let parsed: Vec<_> = texts
        .iter()
        .map(|t| parse_filtered(t, wanted).unwrap())
        .collect();
    let parse = t4.elapsed();
    let snap = |at: f64, parsed: Vec<Vec<_>>| Snapshot {
        at_secs: at,
        targets: parsed
            .into_iter()
            .enumerate()
            .map(|(i, s)| TargetScrape {
                target: Target::parse(&format!("127.0.0.1:{}", 1000 + i)),
                result: Ok(s),
                elapsed_ms: 0.0,
            })
            .collect(),
    };
    let (a, b) = (snap(0.0, parsed.clone()), snap(1.0, parsed));
    let t5 = Instant::now();
    let _ = compute(Some(&a), &b);
    let compute_time = t5.elapsed();
    println!("measure: parse of all 100 texts {parse:?}, compute {compute_time:?} (debug build)");
    let scrape_ms: f64 = g.proxies.iter().map(|p| p.scrape_ms).fold(0.0, f64::max);
    println!(
        "measure: 100 targets, {lines} sample lines in all, {} nodes, {} edges: first step {first:?}, \
         second step (scrape + compute) {second:?}, slowest single scrape {scrape_ms:.1} ms, \
         JSON {encode:?} ({} bytes), top text {render:?} (debug build)",
        g.nodes.len(),
        g.edges.len(),
        json.len()
    );
}
