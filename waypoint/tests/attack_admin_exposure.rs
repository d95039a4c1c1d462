//! Waypoint admin exposure (issue #18, item 12): waypoint pods are not captured, so
//! whatever listens on the pod IP is open to every pod in the cluster. The admin
//! (config_dump, clusters, certs) must listen on loopback only; the pod IP carries only the
//! readiness probe and the metrics, each on its own listener; and no admin endpoint changes
//! state on GET. The waypoint binary runs with the chart's listener layout, 127.0.0.2
//! standing for the pod IP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use meshwork_waypoint::admin::Listen;
use meshwork_waypoint::run::Args;

const POD_IP: &str = "127.0.0.2";

/// A free port on `ip` (bound then released; the waypoint binds it right after).
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `method path` to `addr`: `Ok((status, body))`, `Err` when nothing listens.
fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: waypoint\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((
        status,
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    ))
}

struct Waypoint {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(admin: SocketAddr, metrics: SocketAddr, readiness: SocketAddr) -> Waypoint {
    let dir = std::env::temp_dir().join(format!("mw-attack-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.pb"), b"").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .arg("--static-config")
        .arg(dir.join("config.pb"))
        .args(["--insecure", "--upstream", "plain", "--no-access-log"])
        .args([
            "--http-addr",
            &format!("127.0.0.1:{}", free_port("127.0.0.1")),
        ])
        .args(["--gateway", "production/waypoint"])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--metrics-addr", &metrics.to_string()])
        .args(["--readiness-addr", &readiness.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let w = Waypoint { child, dir };
    // Bounded wait until the admin answers.
    for _ in 0..200 {
        if request(admin, "GET", "/healthz/ready").is_ok() {
            return w;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the waypoint did not answer on its admin address {admin}");
}

#[test]
fn attack_admin_listens_on_loopback_by_default() {
    let args = Args::try_parse_from(["waypoint"]).unwrap();
    let Listen(Some(admin)) = args.admin_addr else {
        panic!("no admin listener by default")
    };
    assert!(admin.ip().is_loopback(), "admin on {admin}");
    for (flag, Listen(addr)) in [
        ("metrics", args.metrics_addr),
        ("readiness", args.readiness_addr),
    ] {
        let addr = addr.unwrap_or_else(|| panic!("no {flag} listener by default"));
        assert_ne!(addr.port(), admin.port(), "{flag} shares the admin port");
    }
}

#[test]
fn attack_pod_ip_listeners_serve_no_admin_endpoint() {
    let admin = SocketAddr::new("127.0.0.1".parse().unwrap(), free_port("127.0.0.1"));
    let metrics = SocketAddr::new(POD_IP.parse().unwrap(), free_port(POD_IP));
    let readiness = SocketAddr::new(POD_IP.parse().unwrap(), free_port(POD_IP));
    let _w = start(admin, metrics, readiness);

    // What the pod IP must keep serving: the probe and the scrape.
    assert_eq!(request(readiness, "GET", "/healthz/ready").unwrap().0, 200);
    let (status, body) = request(metrics, "GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("# EOF") || body.contains("# TYPE"), "{body}");

    // Nothing else, on either pod-IP listener.
    for l in [metrics, readiness] {
        for path in [
            "/config_dump",
            "/config_dump?format=json",
            "/clusters",
            "/certs",
        ] {
            let (status, body) = request(l, "GET", path).unwrap();
            assert_eq!(status, 404, "{l}{path} answered: {body}");
        }
    }
    assert_eq!(request(metrics, "GET", "/healthz/ready").unwrap().0, 404);
    assert_eq!(request(readiness, "GET", "/metrics").unwrap().0, 404);
    // The admin port is closed on the pod IP.
    let on_pod_ip = SocketAddr::new(POD_IP.parse().unwrap(), admin.port());
    assert!(
        request(on_pod_ip, "GET", "/config_dump").is_err(),
        "admin reachable on {on_pod_ip}"
    );

    // On loopback the admin serves everything, and only reads.
    assert_eq!(request(admin, "GET", "/config_dump").unwrap().0, 200);
    for method in ["POST", "PUT", "DELETE"] {
        assert_eq!(
            request(admin, method, "/config_dump").unwrap().0,
            405,
            "{method}"
        );
    }
}
