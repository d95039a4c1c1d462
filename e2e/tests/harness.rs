//! The mini-cluster itself (root): connectivity, exec/spawn inside namespaces, and cleanup
//! even when a test panics.
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use meshwork_e2e::netns::list_netns;
use meshwork_e2e::probe::{connect_line, LineServer};
use meshwork_e2e::Cluster;

fn netns_of_run(run: &str) -> Vec<String> {
    list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{run}-")))
        .collect()
}

#[test]
fn pods_reach_each_other_across_and_within_nodes() {
    let c = Cluster::builder()
        .nodes(2)
        .pods_per_node(2)
        .build()
        .unwrap();
    assert_eq!(netns_of_run(c.run_id()).len(), 1 + 2 + 4);
    let target = c.pod("n1-p1").unwrap().ip;
    let _srv = LineServer::plain(&c, "n1-p1", 8080, "hello").unwrap();
    for from in ["n0-p0", "n1-p0", "n0"] {
        let got = connect_line(
            &c,
            from,
            SocketAddr::new(target.into(), 8080),
            Duration::from_secs(2),
        )
        .unwrap()
        .unwrap();
        assert!(
            got.starts_with(&format!("hello {target}:8080 ")),
            "{from}: {got}"
        );
    }
    let out = c
        .exec_in(
            "n0-p1",
            Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "eth0"]),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&c.pod("n0-p1").unwrap().ip.to_string()),
        "{text}"
    );
    // The host namespace has none of the cluster's addresses.
    let host = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("10.244."));
}

#[test]
fn drop_after_panic_kills_processes_and_removes_namespaces() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = Cluster::builder()
            .nodes(1)
            .pods_per_node(1)
            .build()
            .unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let pid = c.spawn_in("n0-p0", "sleeper", cmd).unwrap();
        seen = Some((c.run_id().to_string(), pid));
        panic!("test failure inside the cluster's scope");
    }));
    assert!(result.is_err());
    let (run, pid) = seen.unwrap();
    assert!(
        netns_of_run(&run).is_empty(),
        "namespaces left: {:?}",
        netns_of_run(&run)
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still runs"
    );
}

#[test]
fn spawned_process_runs_in_the_pod_namespace() {
    let c = Cluster::builder().nodes(1).pod("box", 0).build().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["-4", "-o", "addr", "show", "dev", "eth0"]);
    let pid = c.spawn_in("box", "ip", cmd).unwrap();
    let mut exited = None;
    for _ in 0..250 {
        exited = c.first_exited();
        if exited.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (label, status) = exited.expect("ip exits");
    assert_eq!((label.as_str(), status.code()), ("ip", Some(0)));
    assert!(c.log_path("ip").starts_with(c.log_dir()));
    assert_eq!(c.wait_exit(pid, Duration::from_secs(5)).unwrap(), Some(0));
    assert!(c.first_exited().is_none());
    assert!(c
        .log_of("ip")
        .contains(&c.pod("box").unwrap().ip.to_string()));
    assert!(c.exec_in("nope", &mut Command::new("true")).is_err());
}
