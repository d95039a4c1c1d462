//! A binary that runs out of file descriptors recovers when they are freed: its accept
//! loops wait and retry instead of ending (which left a process that looked healthy and
//! never accepted again). Loopback only; no root needed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{drive, free_port, wait_answering, Process};
use meshwork_e2e::Binaries;

/// Open files allowed to the process (soft and hard, so it cannot raise them).
const FD_LIMIT: libc::rlim_t = 64;

/// Runs `c` with at most [`FD_LIMIT`] open files.
fn limited(mut c: Command) -> Command {
    // SAFETY: only setrlimit (async-signal-safe) between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: FD_LIMIT,
                rlim_max: FD_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// Opens twice as many idle connections to `port` as the process has descriptors, holds
/// them for half a second (it accepts until `EMFILE`), then closes them.
fn flood(port: u16) {
    let held: Vec<TcpStream> = (0..2 * FD_LIMIT)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        held.len() as u64 > FD_LIMIT,
        "only {} connections",
        held.len()
    );
    std::thread::sleep(Duration::from_millis(500));
}

/// Whether an HTTP/2 server answers the client preface on `port` with its SETTINGS
/// within 10 s.
fn h2_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    let mut head = [0u8; 9];
    s.write_all(&hello).is_ok() && s.read_exact(&mut head).is_ok() && head[3] == 4
}

#[test]
fn waypoint_accepts_again_after_running_out_of_descriptors() {
    let bins = Binaries::locate().unwrap();
    let (http, admin) = (free_port(), free_port());
    let _wp = Process::start("waypoint-fds", |dir| {
        limited(common::waypoint(&bins.waypoint, dir, http, admin))
    });
    wait_answering(admin, "/metrics");
    flood(http);

    // Once they are closed, the proxy serves again on both listeners.
    drive(
        http,
        20,
        "GET",
        "orders.production.svc.cluster.local",
        "/",
        "HTTP/1.1 404",
    );
    drive(admin, 5, "GET", "waypoint", "/metrics", "HTTP/1.1 200");
}

/// Whether a TLS server on `port` takes a connection and answers a bad ClientHello (an
/// alert, or closing) within 10 s, rather than leaving it in the backlog.
fn tls_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = [0u8; 64];
    s.write_all(b"not a ClientHello\r\n\r\n").is_ok()
        && match s.read(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
}

#[test]
fn ztunnel_accepts_again_after_running_out_of_descriptors() {
    let bins = Binaries::locate().unwrap();
    let (hbone, admin) = (free_port(), free_port());
    let _zt = Process::start("ztunnel-fds", |dir| {
        limited(common::ztunnel(&bins.ztunnel, dir, hbone, admin))
    });
    wait_answering(admin, "/healthz/ready");
    flood(hbone);
    flood(admin);
    for _ in 0..5 {
        assert!(tls_answers(hbone), "the HBONE listener no longer answers");
    }
    drive(admin, 5, "GET", "ztunnel", "/healthz/ready", "HTTP/1.1 200");
}

#[test]
fn control_plane_accepts_again_after_running_out_of_descriptors() {
    let bins = Binaries::locate().unwrap();
    let (grpc, admin) = (free_port(), free_port());
    let _cp = Process::start("controlplane-fds", |dir| {
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let mut c = Command::new(&bins.controlplane);
        c.arg("--config-dir")
            .arg(dir.join("config"))
            .arg("--ca-dir")
            .arg(dir.join("ca"))
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")]);
        limited(c)
    });
    wait_answering(admin, "/ready");
    flood(admin);
    flood(grpc);
    drive(admin, 5, "GET", "controlplane", "/ready", "HTTP/1.1 200");
    assert!(h2_answers(grpc), "the gRPC listener no longer answers");
}
