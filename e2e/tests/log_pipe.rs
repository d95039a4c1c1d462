//! The proxies keep serving while nobody reads their output: log and access-log lines
//! are written by threads of their own, never by the threads that serve. Each test gives
//! a proxy binary a pipe as stdout that is not read until far more than a pipe holds
//! (64 KiB) has been logged, then checks that every line arrives once it is read.
//! Loopback only; no root needed.

mod common;

use common::{drive, free_port, request, wait_answering, Process};
use meshwork_e2e::Binaries;

/// No line was dropped (the proxy's `/metrics` on `admin` says so), and once stdout is
/// read and the process stopped, exactly `n` lines contain `needle`.
fn all_lines_arrive(p: &mut Process, admin: u16, needle: &'static str, n: usize) {
    let metrics = request(admin, "GET", "proxy", "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("\nmeshwork_log_lines_dropped_total 0\n"),
        "{metrics}"
    );
    let lines = p.count_lines(needle);
    p.stop();
    assert_eq!(lines.join().unwrap(), n);
}

#[test]
fn ztunnel_serves_while_its_log_is_not_read() {
    const CHANGES: usize = 2000;
    let bins = Binaries::locate().unwrap();
    let admin = free_port();
    let mut zt = Process::start("ztunnel", |dir| {
        common::ztunnel(&bins.ztunnel, dir, free_port(), admin)
    });
    wait_answering(admin, "/healthz/ready");
    // Each level change logs one line of 100-200 bytes.
    drive(
        admin,
        CHANGES,
        "POST",
        "ztunnel",
        "/logging?level=info",
        "HTTP/1.1 200",
    );
    all_lines_arrive(
        &mut zt,
        admin,
        "log level set through the admin endpoint",
        CHANGES,
    );
}

#[test]
fn waypoint_serves_while_its_access_log_is_not_read() {
    const REQUESTS: usize = 1000;
    let bins = Binaries::locate().unwrap();
    let (http, admin) = (free_port(), free_port());
    let mut wp = Process::start("waypoint", |dir| {
        common::waypoint(&bins.waypoint, dir, http, admin)
    });
    wait_answering(admin, "/metrics");
    // Access log lines are about 450 bytes.
    drive(
        http,
        REQUESTS,
        "GET",
        "orders.production.svc.cluster.local",
        "/api/orders",
        "HTTP/1.1 404",
    );
    all_lines_arrive(&mut wp, admin, "\"response_flags\":\"NR\"", REQUESTS);
}
