//! A proxy that runs out of file descriptors recovers when they are freed: its accept
//! loops wait and retry instead of ending (which left a process that looked healthy and
//! never accepted again). Loopback only; no root needed.

mod common;

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{drive, free_port, wait_answering, Proxy};
use meshwork_e2e::Binaries;

/// Open files allowed to the proxy (soft and hard, so it cannot raise them).
const FD_LIMIT: libc::rlim_t = 64;

#[test]
fn waypoint_accepts_again_after_running_out_of_descriptors() {
    let bins = Binaries::locate().unwrap();
    let (http, admin) = (free_port(), free_port());
    let _wp = Proxy::start("waypoint-fds", |dir| {
        let mut c = common::waypoint(&bins.waypoint, dir, http, admin);
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
    });
    wait_answering(admin, "/metrics");

    // More idle connections than the proxy has descriptors: it accepts until EMFILE.
    let held: Vec<TcpStream> = (0..2 * FD_LIMIT)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", http)).ok())
        .collect();
    assert!(
        held.len() as u64 > FD_LIMIT,
        "only {} connections",
        held.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    drop(held);

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
