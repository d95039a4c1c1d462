//! `meshwork demo --json` in loopback mode and, when this runs as root on a kernel that
//! loads the eBPF redirection, in netns mode: the real binaries, and the numbers the report
//! observed; Ctrl-C / SIGTERM after `--keep` leave nothing behind.
//!
//! The demo starts `controlplane`, `ztunnel`, `waypoint` and `meshwork-testapp` found next
//! to the `meshwork` binary. `cargo test --workspace` builds every workspace binary before
//! running tests; `cargo test -p meshwork-cli` alone does not, so run
//! `cargo build --workspace --bins` first in that case (this test says so when one is
//! missing).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

const BINARIES: [&str; 4] = ["controlplane", "ztunnel", "waypoint", "meshwork-testapp"];

fn bin_dir() -> PathBuf {
    let meshwork = Path::new(env!("CARGO_BIN_EXE_meshwork"));
    let dir = meshwork.parent().expect("target dir").to_path_buf();
    for b in BINARIES {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: the demo needs every workspace binary; run `cargo test --workspace` \
             (or `cargo build --workspace --bins` before `cargo test -p meshwork-cli`)",
            dir.join(b).display()
        );
    }
    build_wasm_plugins(&dir);
    dir
}

/// Builds the example Wasm plugins where the demo looks for them next to its binary
/// (`<target>/wasm-plugins/wasm32-wasip1/release`, as scripts/demo does); cargo does
/// nothing when they are up to date.
fn build_wasm_plugins(bin_dir: &Path) {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let target = bin_dir.parent().expect("target dir").join("wasm-plugins");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasm-plugins");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
                "--target-dir",
            ])
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building examples/wasm-plugins (scripts/setup adds the wasm32-wasip1 target): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// One full demo at a time: each drives thousands of requests and checks timings (a 10 s
/// route timeout) that two concurrent runs on a 2-core machine would blur.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn section(report: &Value, pattern: u64) -> &Value {
    report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pattern"] == pattern)
        .unwrap_or_else(|| panic!("no section {pattern} in {report}"))
}

#[test]
fn loopback_demo_observes_every_pattern() {
    let dir = bin_dir();
    let _one = heavy();
    // The built-in seed manifests, exactly as the article wrote them.
    let out = Command::new(dir.join("meshwork"))
        .args(["demo", "--mode", "loopback", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}\n{stderr}"));
    assert!(
        stderr
            .lines()
            .next()
            .unwrap_or("")
            .contains("mode: loopback"),
        "{stderr}"
    );
    assert_eq!(report["mode"], "loopback");
    assert_all_patterns(&report);
    assert!(section(&report, 5)["data"]["plaintext"].is_null());
    assert!(section(&report, 1)["data"]["capture"].is_null());
    assert!(out.status.success(), "{:?}", out.status);
    // About 11 s for the five seed patterns, about 15 s for the canary releases.
    assert!(report["duration_ms"].as_u64().unwrap() < 45_000, "{report}");
}

/// Every pattern ok, with plausible numbers.
fn assert_all_patterns(report: &Value) {
    let problems: Vec<&Value> = report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert!(problems.is_empty(), "failed sections: {problems:#?}");
    assert_eq!(report["ok"], true);

    let s1 = &section(report, 1)["data"];
    assert!(s1["workloads"].as_array().unwrap().len() >= 7, "{s1}");
    assert_eq!(s1["health_ok"], s1["health_sent"]);
    let ids: Vec<&str> = s1["mtls_identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        ids.contains(&"spiffe://cluster.local/ns/production/sa/order-service"),
        "{ids:?}"
    );

    let s2 = &section(report, 2)["data"];
    assert_eq!(s2["canary"]["v2"], s2["canary"]["sent"]);
    assert_eq!(s2["even_user_id"]["v2"], s2["even_user_id"]["sent"]);
    assert_eq!(s2["timeout"]["status"], 504, "{s2}");
    let waited = s2["timeout"]["elapsed_ms"].as_u64().unwrap();
    assert!((9_500..12_000).contains(&waited), "504 after {waited} ms");
    // retries: attempts: 3 → four tries of a request that fails every time.
    let tries = s2["retry"]["tries"].as_array().unwrap();
    assert_eq!(tries.len() as u64, s2["retry"]["sent"].as_u64().unwrap());
    assert!(tries.iter().all(|t| t == 4), "{tries:?}");
    let v2 = s2["split"]["v2_pct"].as_f64().unwrap();
    assert!((5.0..=15.0).contains(&v2), "v2 share {v2}%");
    assert_eq!(
        s2["split"]["v1"].as_u64().unwrap() + s2["split"]["v2"].as_u64().unwrap(),
        s2["split"]["sent"].as_u64().unwrap()
    );

    let s3 = &section(report, 3)["data"];
    assert_eq!(s3["retry"]["succeeded"], s3["retry"]["sent"]);
    assert!(s3["retry"]["retried"].as_u64().unwrap() >= 1, "{s3}");
    assert!(s3["ejections"].as_u64().unwrap() >= 1, "{s3}");
    assert_eq!(s3["ejected"][0], "payment-service-2", "{s3}");
    assert!(
        s3["overflow"]["uo_in_access_log"].as_u64().unwrap() >= 1,
        "{s3}"
    );
    assert!(s3["overflow"]["ok"].as_u64().unwrap() >= 1, "{s3}");

    // Tracing: spans the waypoint exported to the demo's OTLP collector.
    let s4 = section(report, 4);
    assert_eq!(s4["status"], "ok", "{s4}");
    let s4 = &s4["data"];
    assert_eq!(s4["failed"], 0, "{s4}");
    let pct = s4["random"]["pct"].as_f64().unwrap();
    assert!((7.0..=13.0).contains(&pct), "sampled {pct}%: {s4}");
    assert!(s4["random"]["sent"].as_u64().unwrap() >= 900, "{s4}");
    let spans = s4["spans"].as_u64().unwrap();
    assert!(spans >= s4["random"]["sampled"].as_u64().unwrap(), "{s4}");
    assert_eq!(s4["spans_with_user_id"], spans, "{s4}");
    for forced in ["b3", "traceparent"] {
        let f = &s4["forced"][forced];
        assert!(f["sent"].as_u64().unwrap() >= 1, "{s4}");
        assert_eq!(f["honoured"], f["sent"], "{forced}: {s4}");
    }
    let checked = s4["backend"]["checked"].as_u64().unwrap();
    assert!(checked >= s4["random"]["sampled"].as_u64().unwrap(), "{s4}");
    assert_eq!(s4["backend"]["same_trace"], checked, "{s4}");

    let cases = section(report, 5)["data"]["cases"].as_array().unwrap();
    let decisions: Vec<(bool, bool)> = cases
        .iter()
        .map(|c| {
            (
                c["expected_allow"].as_bool().unwrap(),
                c["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [(true, true), (false, false), (false, false), (false, false)]
    );
    assert!(cases[3]["policy"]
        .as_str()
        .unwrap()
        .contains("deny-all-default"));

    assert_progressive_delivery(&section(report, 6)["data"]);
    assert_wasm_pattern(report);
}

/// Pattern 6: v2 promoted through the weights, v3 rolled back, as the wire showed.
fn assert_progressive_delivery(s6: &Value) {
    let releases = s6["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2, "{s6}");
    let (v2, v3) = (&releases[0], &releases[1]);
    assert_eq!(
        (&v2["version"], &v2["outcome"]),
        (&"v2".into(), &"Succeeded".into()),
        "{s6}"
    );
    assert_eq!(
        (&v3["version"], &v3["outcome"]),
        (&"v3".into(), &"Failed".into()),
        "{s6}"
    );
    // Every weight of the Canary's stepWeights, in order, with the canary's share of the
    // answers close to it.
    let weights: Vec<u64> = v2["weights"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .filter(|w| *w > 0)
        .collect();
    let mut distinct = weights.clone();
    distinct.dedup();
    assert_eq!(distinct, [20, 50], "{s6}");
    for step in v2["steps"].as_array().unwrap() {
        let w = step["weight"].as_f64().unwrap();
        let wire = &step["wire"];
        if step["phase"] == "Progressing" && w > 0.0 && wire["answers"].as_u64().unwrap() >= 20 {
            let got = wire["canary_pct"].as_f64().unwrap();
            assert!(
                (got - w).abs() <= 20.0,
                "weight {w}: {got}% on the wire: {s6}"
            );
        }
    }
    // No request failed while the weights moved to the healthy v2.
    assert!(v2["sent"].as_u64().unwrap() >= 100, "{s6}");
    assert_eq!(v2["failed"], 0, "{s6}");
    assert_eq!(v2["final"]["version"], "v2");
    assert!(v2["final"]["pct"].as_f64().unwrap() >= 99.0, "{s6}");
    // v3 got traffic, failed it, was judged failing and left no traffic behind.
    assert!(v3["failed"].as_u64().unwrap() >= 1, "{s6}");
    let failing_check = v3["steps"].as_array().unwrap().iter().any(|st| {
        st["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["passed"] == false)
    });
    assert!(failing_check, "{s6}");
    assert_eq!(v3["final"]["version"], "v2");
    assert!(v3["final"]["pct"].as_f64().unwrap() >= 99.0, "{s6}");
}

/// Pattern 7: the auth-header plugin refused every request without the key (its own
/// counter says so too), the trap plugin failed exactly its trapping requests.
fn assert_wasm_pattern(report: &Value) {
    let s7 = section(report, 7);
    assert_eq!(s7["status"], "ok", "{s7}");
    let d = &s7["data"];
    assert_eq!(d["without_key"], serde_json::json!({"401": 10}), "{d}");
    assert_eq!(d["denied_by_plugin"], 10, "{d}");
    assert_eq!(d["wrong_key"], serde_json::json!({"401": 10}), "{d}");
    assert_eq!(d["with_key"], serde_json::json!({"200": 10}), "{d}");
    assert_eq!(d["denied_metric"], 20.0, "{d}");
    assert_eq!(d["trap"], serde_json::json!({"503": 3}), "{d}");
    assert_eq!(d["trap_fail_stream"], 3, "{d}");
    assert_eq!(d["after_trap"], serde_json::json!({"200": 10}), "{d}");
}

#[test]
fn missing_seed_dir_is_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .args(["demo", "--seed-dir", "/nonexistent/meshwork-seeds"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("/nonexistent/meshwork-seeds"),
        "{stderr}"
    );
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

/// Kills the demo if the test fails half-way (its children follow through PDEATHSIG).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn keep_then_ctrl_c_tears_everything_down() {
    let dir = bin_dir();
    let _one = heavy();
    let mut guard = KillOnDrop(
        Command::new(dir.join("meshwork"))
            .args(["demo", "--mode", "loopback", "--keep"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    let run_dir = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no --keep banner: {seen:#?}"));
        if let Some(rest) = line.split("removes ").nth(1) {
            break rest.trim_end_matches("):").to_string();
        }
        seen.push(line);
    };
    let curl_line = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        curl_line.contains("curl --socks5-hostname 127."),
        "{curl_line}"
    );
    assert!(Path::new(&run_dir).is_dir(), "{run_dir}");
    assert!(!processes_mentioning(&run_dir).is_empty());
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "meshwork demo ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!Path::new(&run_dir).exists(), "{run_dir} left behind");
    assert!(
        processes_mentioning(&run_dir).is_empty(),
        "{:?}",
        processes_mentioning(&run_dir)
    );
}

/// Whether netns mode can run here (root, and the redirection loads); says why not.
fn netns_capable() -> bool {
    match meshwork_netlab::capability::probe_redirect() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("netns demo not run: {e}");
            false
        }
    }
}

/// Named network namespaces starting with `prefix`.
fn netns_named(prefix: &str) -> Vec<String> {
    meshwork_netlab::netns::list_netns()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// BPF pin directories starting with `prefix`.
fn pins_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir(meshwork_netlab::BPF_PIN_ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A line of the form `… ip netns exec <ns> curl http://<ip>:<port>/path` → (ns, ip:port).
fn curl_target(line: &str) -> Option<(String, std::net::SocketAddr)> {
    let rest = line.split("ip netns exec ").nth(1)?;
    let ns = rest.split_whitespace().next()?.to_string();
    let url = rest.split("http://").nth(1)?;
    let addr = url.split('/').next()?.parse().ok()?;
    Some((ns, addr))
}

/// `GET /api/orders` from inside `netns` on a plain connection (what the printed curl does).
fn get_orders_from(netns: &str, addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    meshwork_netlab::netns::in_netns(netns, move || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.write_all(
            b"GET /api/orders HTTP/1.1\r\nHost: order-service\r\nConnection: close\r\n\r\n",
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("GET /api/orders from {netns} to {addr}: {e}"))
}

/// The run id in a progress or banner line (`… network namespaces <run>-* …`).
fn run_id_in(line: &str) -> Option<String> {
    let rest = line.split("network namespaces ").nth(1)?;
    Some(rest.split("-*").next()?.to_string())
}

/// Nothing of run `run` is left: namespaces (and with them their veths), BPF pins, the
/// log directory, processes.
fn assert_nothing_left(run: &str) {
    let prefix = format!("{run}-");
    assert!(
        netns_named(&prefix).is_empty(),
        "{:?}",
        netns_named(&prefix)
    );
    assert!(pins_named(&prefix).is_empty(), "{:?}", pins_named(&prefix));
    let logs = std::env::temp_dir().join("meshwork-e2e").join(run);
    assert!(!logs.exists(), "{} left behind", logs.display());
    assert!(
        processes_mentioning(run).is_empty(),
        "{:?}",
        processes_mentioning(run)
    );
}

/// The netns demo end to end: every pattern ok on the eBPF-captured cluster, and its
/// normal end removes the namespaces, BPF pins, logs and processes.
#[test]
fn netns_demo_observes_every_pattern_and_leaves_nothing_behind() {
    let dir = bin_dir();
    if !netns_capable() {
        return;
    }
    let _one = heavy();
    let started = Instant::now();
    let out = Command::new(dir.join("meshwork"))
        .args(["demo", "--mode", "netns", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}\n{stderr}"));
    assert!(
        stderr.lines().next().unwrap_or("").contains("mode: netns"),
        "{stderr}"
    );
    assert_eq!(report["mode"], "netns");
    assert_all_patterns(&report);
    assert!(out.status.success(), "{:?}\n{stderr}", out.status);
    // Plaintext from outside the mesh: only netns mode has capture to drive it.
    let plain = section(&report, 5)["data"]["plaintext"].as_array().unwrap();
    assert_eq!(plain.len(), 2, "{plain:?}");
    assert!(plain.iter().all(|p| p["refused"] == true), "{plain:?}");
    assert!(
        plain[0]["ztunnel_decision"]
            .as_str()
            .unwrap()
            .contains("STRICT"),
        "{plain:?}"
    );
    // The apps' own connections were captured by eBPF on both nodes.
    let capture = &section(&report, 1)["data"]["capture"];
    let outbound: u64 = ["node-a", "node-b"]
        .iter()
        .map(|n| capture[n]["outbound_syn"].as_u64().unwrap())
        .sum();
    assert!(outbound >= 2000, "{capture}");
    assert!(
        capture["node-a"]["enrolled"].as_u64().unwrap() >= 3,
        "{capture}"
    );
    assert!(report["duration_ms"].as_u64().unwrap() < 60_000, "{report}");
    let run = stderr
        .lines()
        .find_map(run_id_in)
        .unwrap_or_else(|| panic!("no run id in {stderr}"));
    assert_nothing_left(&run);
    // Well under the ~2 minutes the brief allows on a 2-core machine.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
}

/// `--keep` in netns mode: the printed commands work against the running mesh, and
/// SIGTERM removes everything.
#[test]
fn netns_keep_prints_working_commands_then_sigterm_cleans_up() {
    let dir = bin_dir();
    if !netns_capable() {
        return;
    }
    let _one = heavy();
    let mut guard = KillOnDrop(
        Command::new(dir.join("meshwork"))
            .args(["demo", "--mode", "netns", "--keep"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Bounded: the --keep banner and its lines.
    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut banner, mut seen) = (Vec::new(), Vec::new());
    while !banner.iter().any(|l: &String| l.contains("logs:")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no --keep banner: {seen:#?}"));
        if line.contains("keeps running") || !banner.is_empty() {
            banner.push(line);
        } else {
            seen.push(line);
        }
    }
    let run = run_id_in(&banner[0]).unwrap_or_else(|| panic!("no run id in {banner:#?}"));
    let prefix = format!("{run}-");
    assert!(
        netns_named(&prefix).len() >= 1 + 3 + 8,
        "{:?}",
        netns_named(&prefix)
    );
    assert_eq!(pins_named(&prefix).len(), 3, "{:?}", pins_named(&prefix));
    let curl = banner
        .iter()
        .find(|l| l.contains("curl http://") && l.ends_with("/api/orders"))
        .unwrap_or_else(|| panic!("no curl line in {banner:#?}"));
    let (client_ns, vip) = curl_target(curl).unwrap_or_else(|| panic!("{curl}"));
    let answer = get_orders_from(&client_ns, vip);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("order-service"), "{answer}");
    assert!(!processes_mentioning(&run).is_empty());

    // SIGTERM (as a service manager would stop it) removes everything.
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "meshwork demo ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert_nothing_left(&run);
}

/// `--mode netns` without root: one clear error line and a non-zero exit, nothing started.
#[test]
fn netns_mode_without_root_is_one_clear_error() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: run as ourselves.
        let out = Command::new(env!("CARGO_BIN_EXE_meshwork"))
            .args(["demo", "--mode", "netns"])
            .output()
            .unwrap();
        assert_netns_refused(&out);
        return;
    }
    // As nobody, from a copy in a directory nobody can reach (the target directory may be
    // under a home directory it cannot enter).
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("meshwork");
    std::fs::copy(env!("CARGO_BIN_EXE_meshwork"), &bin).unwrap();
    let out = Command::new(&bin)
        .args(["demo", "--mode", "netns"])
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_netns_refused(&out);
}

fn assert_netns_refused(out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: --mode netns is not possible here: not running as root"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn curl_lines_parse() {
    assert_eq!(
        curl_target("  ip netns exec mw1r0-order-client curl http://10.96.0.5:8080/api/orders"),
        Some((
            "mw1r0-order-client".to_string(),
            "10.96.0.5:8080".parse().unwrap()
        ))
    );
    assert_eq!(
        curl_target("curl --socks5-hostname 127.0.0.1:1 http://x"),
        None
    );
}

/// Ctrl-C in the middle of the netns demo's traffic: the run stops and removes its
/// namespaces, pins and processes.
#[test]
fn netns_demo_interrupted_mid_run_leaves_nothing_behind() {
    let dir = bin_dir();
    if !netns_capable() {
        return;
    }
    let _one = heavy();
    let mut guard = KillOnDrop(
        Command::new(dir.join("meshwork"))
            .args(["demo", "--mode", "netns"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    // Read stderr to its end on a thread (closing the pipe early would make the demo's
    // own progress lines fail).
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut run = None;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no pattern 2 line: {seen:#?}"));
        if let Some(r) = run_id_in(&line) {
            run = Some(r);
        }
        if line.contains("pattern 2:") {
            break;
        }
        seen.push(line);
    }
    let run = run.expect("the mesh-up line names the run");
    let prefix = format!("{run}-");
    assert!(!netns_named(&prefix).is_empty());
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "meshwork demo ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2), "interrupted is an error exit");
    assert_nothing_left(&run);
}
