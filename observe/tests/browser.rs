//! The service-graph page in a real headless browser (Debian `chromium`): the library
//! serves the page over fake proxies whose counters grow on every scrape; Chromium loads it,
//! lets it refresh a few times, and the test checks the DOM it built (nodes, waypoint,
//! edges with their numbers, denials, identities) and the screenshot's pixels (not blank, the
//! graph's colours present).
//!
//! Needs `chromium` (Debian package `chromium`); the test installs it when missing and
//! skips, saying so, only when it cannot be installed. With `MESHWORK_SCREENSHOT=PATH` it
//! also saves the screenshot there (docs/img/service-graph.png comes from this).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ensure_installed, scaled, FakeProxy, FIXTURES};
use meshwork_observe::graph::Target;
use meshwork_observe::{serve, ServeOptions};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 800;

/// Runs chromium headless with `args` then `url`; kills it after `limit`.
fn chromium(profile: &Path, args: &[String], url: &str, limit: Duration) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = reader.join().unwrap();
            if !status.success() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!("chromium {args:?} {url}: {status}\n{err}");
            }
            return out;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} {url}: no exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Image {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

fn decode(path: &Path) -> Image {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    Image {
        width: info.width,
        height: info.height,
        rgb: bytes.chunks(step).map(|p| [p[0], p[1], p[2]]).collect(),
    }
}

/// Pixels within `tolerance` of `colour` on every channel.
fn count_near(img: &Image, colour: [u8; 3], tolerance: u8) -> usize {
    img.rgb
        .iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(colour[i]) <= tolerance))
        .count()
}

/// Scans the DOM for an element's opening tag holding every one of `attrs`.
fn has_tag(dom: &str, attrs: &[&str]) -> bool {
    dom.split('<').any(|tag| {
        let tag = tag.split('>').next().unwrap_or("");
        attrs.iter().all(|a| tag.contains(a))
    })
}

/// The text of the `<text>` elements carrying `attrs`.
fn texts_with<'a>(dom: &'a str, attrs: &[&str]) -> Vec<&'a str> {
    dom.split("<text ")
        .skip(1)
        .filter_map(|t| {
            let (open, rest) = t.split_once('>')?;
            attrs
                .iter()
                .all(|a| open.contains(a))
                .then(|| rest.split('<').next().unwrap_or(""))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_draws_the_live_service_graph() {
    if !ensure_installed("chromium", "chromium") {
        eprintln!(
            "SKIPPED: `chromium` is not installed and `apt-get install -y chromium` failed; \
             scripts/setup installs it"
        );
        return;
    }
    // Each proxy serves the recorded scrape 1 scaled by its scrape count: every scrape
    // adds one more copy of that traffic.
    let proxies: Vec<FakeProxy> = FIXTURES
        .iter()
        .map(|(_, _, b)| {
            let b = b.to_string();
            FakeProxy::dynamic(move |n| scaled(&b, n))
        })
        .collect();
    let mut targets: Vec<Target> = proxies.iter().map(|p| Target::parse(&p.url())).collect();
    targets[2].name = Some("production/waypoint-0".into());
    let server = serve(
        targets,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            interval: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Let the server take two scrapes so the first page load already has rates.
    let api = format!("http://{}/api/graph", server.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = meshwork_observe::scrape::get(&api, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, 200);
        let g: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if !g["window_secs"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "no second scrape: {g}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let (profile, shot, blank_shot) = (
        dir.path().join("profile"),
        dir.path().join("graph.png"),
        dir.path().join("blank.png"),
    );
    let dom = {
        let (p, u) = (profile.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            chromium(
                &p,
                &["--virtual-time-budget=4000".into(), "--dump-dom".into()],
                &u,
                Duration::from_secs(120),
            )
        })
        .await
        .unwrap()
    };

    // Live: the page fetched /api/graph more than once.
    let updates: u32 = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-updates on <body>:\n{dom}"));
    assert!(updates >= 2, "{updates} updates");
    // Nodes, the waypoint, the denied service edge's target.
    for (id, kind) in [
        ("production/frontend", "workload"),
        ("production/waypoint-0", "waypoint"),
        ("production/order-v1", "workload"),
        ("production/order-v2", "workload"),
        ("legacy/legacy-client", "workload"),
        ("order-service.production.svc.cluster.local", "service"),
    ] {
        assert!(
            has_tag(
                &dom,
                &[
                    "class=\"node\"",
                    &format!("data-id=\"{id}\""),
                    &format!("data-kind=\"{kind}\"")
                ]
            ),
            "node {id} ({kind}) not drawn:\n{dom}"
        );
    }
    // Edges with their numbers: frontend → order-v2 answers 90% at p99 950 ms; the
    // plaintext legacy client is not mTLS.
    assert!(has_tag(
        &dom,
        &[
            "class=\"edge\"",
            "data-source=\"production/frontend\"",
            "data-destination=\"production/order-v2\"",
            "data-protocol=\"http\"",
            "data-mtls=\"yes\""
        ]
    ));
    assert!(has_tag(
        &dom,
        &[
            "class=\"edge\"",
            "data-source=\"legacy/legacy-client\"",
            "data-mtls=\"no\""
        ]
    ));
    let label = texts_with(
        &dom,
        &[
            "data-source=\"production/frontend\"",
            "data-destination=\"production/order-v2\"",
        ],
    );
    assert_eq!(label.len(), 1, "{label:?}");
    assert!(label[0].contains(" rps · 90.0% · p99 950ms"), "{label:?}");
    let rps: f64 = label[0].split(' ').next().unwrap().parse().unwrap();
    assert!(rps > 0.0, "{label:?}");
    let denied = texts_with(&dom, &["class=\"edge-label denied\""]);
    assert!(
        denied.iter().filter(|t| t.starts_with("denied ")).count() >= 2,
        "denials shown on the partner and legacy edges: {denied:?}"
    );
    assert!(dom.contains("spiffe://cluster.local/ns/production/sa/frontend"));
    assert!(dom.contains("order-service.production.svc.cluster.local"));

    // The screenshot: the page against a blank one.
    {
        let (p, u, s, b) = (
            profile.clone(),
            url.clone(),
            shot.clone(),
            blank_shot.clone(),
        );
        tokio::task::spawn_blocking(move || {
            chromium(
                &p,
                &[
                    "--virtual-time-budget=4000".into(),
                    format!("--screenshot={}", s.display()),
                ],
                &u,
                Duration::from_secs(120),
            );
            chromium(
                &p,
                &[format!("--screenshot={}", b.display())],
                "about:blank",
                Duration::from_secs(120),
            );
        })
        .await
        .unwrap();
    }
    let img = decode(&shot);
    let blank = decode(&blank_shot);
    assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
    let mut colours: Vec<[u8; 3]> = img.rgb.clone();
    colours.sort();
    colours.dedup();
    assert!(colours.len() > 50, "{} distinct colours", colours.len());
    let differ = img
        .rgb
        .iter()
        .zip(&blank.rgb)
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differ > (WIDTH * HEIGHT / 10) as usize,
        "only {differ} pixels differ from a blank page"
    );
    // The waypoint's purple hexagon, the workloads' blue circles, the header's dark band,
    // the red of the plaintext edge and denial counts.
    for (what, colour, at_least) in [
        ("waypoint purple", [0x7b, 0x4f, 0xd6], 500),
        ("workload blue", [0x2f, 0x7d, 0xe1], 2000),
        ("header", [0x1d, 0x23, 0x30], 10_000),
        ("plaintext/denied red", [0xd2, 0x3a, 0x3a], 50),
    ] {
        let n = count_near(&img, colour, 12);
        assert!(n >= at_least, "{what}: {n} pixels");
    }
    if let Some(dest) = std::env::var_os("MESHWORK_SCREENSHOT") {
        let dest = PathBuf::from(dest);
        std::fs::copy(&shot, &dest).unwrap();
        eprintln!("screenshot saved to {}", dest.display());
    }
}
