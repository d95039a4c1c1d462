//! Host / request-target confusion (issue #18, item 4): authorization, routing and service
//! resolution must judge the same authority the application receives. The waypoint serves
//! the connection as it does a CONNECT to the payment-service VIP (the service is picked by
//! the VIP, so the Host header is free-form), over real sockets on loopback; the backend
//! answers with the Host it received.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use meshwork_model::pb::config as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PAYMENT_VIP: &str = "240.240.0.20";
const DENIED_HOST: &str = "internal.example.com";

/// A backend answering 200 with the Host it saw (HTTP/1.1 upstream).
async fn host_echo() -> Backend {
    backend(Arc::new(|_, parts| {
        let host = parts
            .headers
            .get_all("host")
            .iter()
            .map(|h| h.to_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
            .join(",");
        (200, host, Duration::ZERO)
    }))
    .await
}

/// DENY `hosts: [internal.example.com]` on payment-service (targetRef, at the waypoint).
fn deny_internal_host() -> pb::Authorization {
    service_policy(
        "no-internal-vhost",
        pb::Action::Deny,
        "payment-service",
        vec![pb::Rule {
            from: vec![],
            to: vec![pb::Operation {
                hosts: vec![DENIED_HOST.into()],
                ..Default::default()
            }],
            when: vec![],
        }],
    )
}

struct Fixture {
    addr: SocketAddr,
    backend: Backend,
    log: Arc<Mutex<Vec<String>>>,
}

/// The waypoint serving every connection as a tunnel to the payment-service VIP from
/// order-service.
async fn fixture() -> Fixture {
    let backend = host_echo().await;
    let mut m = Mesh::default();
    m.service("payment-service", PAYMENT_VIP)
        .workload(
            "payment-0",
            "payment-service",
            "v1",
            "payment-service",
            backend.addr.port(),
        )
        .authz(deny_internal_host())
        .bind_all_to_waypoint();
    let destination: SocketAddr = format!("{PAYMENT_VIP}:80").parse().unwrap();
    let proxy = proxy_with(
        m.snapshot(),
        ProxySetup {
            identity: Some(ORDER_SA.into()),
            destination: Some(destination),
            ..Default::default()
        },
    )
    .await;
    Fixture {
        addr: proxy.addr,
        backend,
        log: proxy.log,
    }
}

/// Sends raw HTTP/1.1 bytes (`Connection: close`) and returns (status, body).
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn log_entries(f: &Fixture) -> Vec<serde_json::Value> {
    f.log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn attack_absolute_form_target_cannot_smuggle_a_denied_host_to_the_app() {
    let f = fixture().await;
    // Control: the denied vhost in the Host header is denied.
    let (status, _) = raw(
        f.addr,
        &format!("POST /api/payments/1 HTTP/1.1\r\nHost: {DENIED_HOST}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 403, "origin-form request to the denied host");
    // The attack: an allowed target authority, the denied vhost in Host.
    let (status, seen) = raw(
        f.addr,
        &format!("POST http://payment-service:80/api/payments/1 HTTP/1.1\r\nHost: {DENIED_HOST}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_ne!(seen, DENIED_HOST, "the app was handed the denied host");
    assert_eq!(
        (status, seen.as_str()),
        (200, "payment-service:80"),
        "allowed, and the app sees the authority that was authorized"
    );
    // The reverse: a denied target authority behind an innocent Host is denied too.
    let (status, _) = raw(
        f.addr,
        &format!("POST http://{DENIED_HOST}/api/payments/1 HTTP/1.1\r\nHost: payment-service\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 403, "absolute-form request to the denied host");
    // The access log records the authority that was judged and forwarded.
    let lines = log_entries(&f);
    let authorities: Vec<&str> = lines
        .iter()
        .map(|l| l["authority"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        authorities,
        [DENIED_HOST, "payment-service:80", DENIED_HOST],
        "{lines:?}"
    );
    assert_eq!(f.backend.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn attack_several_host_headers_are_refused() {
    let f = fixture().await;
    let (status, _) = raw(
        f.addr,
        &format!("GET /api/payments/1 HTTP/1.1\r\nHost: payment-service\r\nHost: {DENIED_HOST}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(f.backend.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let lines = log_entries(&f);
    assert_eq!(lines[0]["response_flags"], "DPE", "{lines:?}");
}

/// One HTTP/2 request with `:authority` and a separate `host` header.
async fn h2_request(addr: SocketAddr, authority: &str, host: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}/api/payments/1"))
        .header("host", host)
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("response within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn attack_h2_host_header_disagreeing_with_authority_loses_to_authority() {
    let f = fixture().await;
    // :authority wins (as in Envoy): the app sees it, and the policy judged it.
    assert_eq!(
        h2_request(f.addr, "payment-service:80", DENIED_HOST).await,
        (200, "payment-service:80".into())
    );
    assert_eq!(
        h2_request(f.addr, DENIED_HOST, "payment-service:80")
            .await
            .0,
        403
    );
}

/// `hosts` names a DNS name: a fully qualified spelling with the root's trailing dot, upper
/// case and a port are the same host, to the resolver and to the application.
#[tokio::test]
async fn attack_trailing_dot_case_and_port_do_not_dodge_a_hosts_deny() {
    let f = fixture().await;
    let mut passed = Vec::new();
    for host in [
        "internal.example.com",
        "internal.example.com.",
        "INTERNAL.Example.COM.",
        "internal.example.com.:80",
        "Internal.Example.Com:8080",
        "internal.example.com.:8080",
    ] {
        let (status, seen) = raw(
            f.addr,
            &format!("GET /api/payments/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        if status != 403 {
            passed.push(format!("{host} -> {status}, the app saw {seen:?}"));
        }
        let (status, _) = h2_request(f.addr, host, host).await;
        if status != 403 {
            passed.push(format!("{host} (h2 :authority) -> {status}"));
        }
    }
    assert!(passed.is_empty(), "passed the hosts DENY: {passed:#?}");
    assert_eq!(f.backend.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Control: another host is served.
    let (status, _) = raw(
        f.addr,
        "GET /api/payments/1 HTTP/1.1\r\nHost: payment-service.\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
}
