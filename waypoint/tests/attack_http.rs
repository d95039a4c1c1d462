//! HTTP/1.1 and HTTP/2 request smuggling, slowloris and header floods against the waypoint,
//! written as raw bytes over loopback. The invariant: the backend sees only requests the
//! waypoint itself parsed, authorized and framed — never a second request hidden in a
//! body — and a client that trickles its headers loses its connection.

mod common;
#[path = "../../hbone/tests/support/h2raw.rs"]
mod h2raw;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::pb::config as pb;
use meshwork_waypoint::server::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the backend received, one entry per request it parsed.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

type Record = Arc<Mutex<Vec<Seen>>>;

/// An HTTP/1.1 + HTTP/2 backend recording every request (and its whole body).
async fn recording_backend() -> (SocketAddr, Record) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Record = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        for _ in 0..1000 {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_else(|_| b"<body error>".to_vec());
                        record.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// DENY of every path under `/smuggled`: a smuggled request that the waypoint parses
/// itself is refused, so the backend seeing `/smuggled` means the waypoint was bypassed.
fn deny_smuggled() -> pb::Authorization {
    service_policy(
        "deny-smuggled",
        pb::Action::Deny,
        "order-service",
        vec![pb::Rule {
            to: vec![pb::Operation {
                paths: vec!["/smuggled*".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    )
}

struct Fixture {
    waypoint: SocketAddr,
    seen: Record,
}

/// The waypoint on 127.0.0.1 with `limits`, in front of a recording backend.
async fn fixture(limits: ServerLimits) -> Fixture {
    let (backend, seen) = recording_backend().await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload(
            "order-v1",
            "order-service",
            "v1",
            "order-service",
            backend.port(),
        )
        .authz(deny_smuggled());
    let proxy = proxy_with(
        m.snapshot(),
        ProxySetup {
            identity: Some(ORDER_SA.into()),
            limits,
            ..Default::default()
        },
    )
    .await;
    Fixture {
        waypoint: proxy.addr,
        seen,
    }
}

/// Sends `bytes` on a new connection; returns everything answered until the connection
/// closes or 3 s of silence pass, and whether the waypoint closed it.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            Ok(_) => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Status codes of the HTTP/1.1 responses in `text`, in order (the backend's bodies never
/// contain a status line).
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: order-service\r\n\r\n";

/// What the waypoint must do with one smuggling vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// 400 to the client, nothing reaches the backend.
    Refused,
    /// Exactly one request reaches the backend, with this body, and the client gets these
    /// statuses: 200, then 403 for a request pipelined after it, which the waypoint parsed
    /// itself (and denied).
    Forwarded(&'static str, &'static [u16]),
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.3): the chunked framing wins,
    /// Content-Length is dropped, exactly one request with this body reaches the backend,
    /// and the waypoint closes the connection after answering, so nothing pipelined after
    /// it is read at all.
    ForwardedThenClosed(&'static str),
    /// A broken chunked body: the client never gets a 2xx, and the backend receives no
    /// complete request (nothing, or a request whose body fails).
    BodyRejected,
}

fn vectors() -> Vec<(&'static str, String, Expect)> {
    let head = "POST / HTTP/1.1\r\nHost: order-service\r\n";
    let chunked_end = "0\r\n\r\n";
    vec![
        (
            "CL.TE (Content-Length first, then Transfer-Encoding)",
            format!("{head}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::ForwardedThenClosed(""),
        ),
        (
            "TE.CL (Transfer-Encoding first, then Content-Length)",
            format!("{head}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::ForwardedThenClosed(""),
        ),
        (
            "two different Content-Length headers",
            format!("{head}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            Expect::Refused,
        ),
        (
            "Content-Length list with different values",
            format!("{head}Content-Length: 0, {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            Expect::Refused,
        ),
        (
            "signed Content-Length",
            format!("{head}Content-Length: +0\r\n\r\n{SMUGGLED}"),
            Expect::Refused,
        ),
        (
            "Transfer-Encoding: chunked, identity (chunked not last)",
            format!("{head}Transfer-Encoding: chunked, identity\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::Refused,
        ),
        (
            "Transfer-Encoding: xchunked (unknown coding)",
            format!("{head}Transfer-Encoding: xchunked\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::Refused,
        ),
        (
            "whitespace before the colon of Transfer-Encoding",
            format!("{head}Transfer-Encoding : chunked\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::Refused,
        ),
        (
            "obs-fold continuing Transfer-Encoding",
            format!("{head}Transfer-Encoding: identity\r\n chunked\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::Refused,
        ),
        (
            "bare CR inside a header value",
            format!("{head}X-A: b\rTransfer-Encoding: chunked\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::Refused,
        ),
        (
            "negative chunk size",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n-1\r\n{SMUGGLED}"),
            Expect::BodyRejected,
        ),
        (
            "chunk size overflowing 64 bits",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n{SMUGGLED}"),
            Expect::BodyRejected,
        ),
        (
            "chunk size with 0x prefix",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n{chunked_end}{SMUGGLED}"),
            Expect::BodyRejected,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!("POST / HTTP/1.0\r\nHost: order-service\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_end}{SMUGGLED}"),
            Expect::Refused,
        ),
        (
            "GET with a Content-Length body holding a request",
            format!("GET / HTTP/1.1\r\nHost: order-service\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            Expect::Forwarded(SMUGGLED, &[200]),
        ),
        (
            "chunked body holding a request, then a pipelined request",
            format!(
                "{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n{chunked_end}{SMUGGLED}",
                SMUGGLED.len()
            ),
            Expect::Forwarded(SMUGGLED, &[200, 403]),
        ),
        (
            "bare LF line endings",
            "POST / HTTP/1.1\nHost: order-service\nContent-Length: 5\n\nhello".to_string(),
            Expect::Forwarded("hello", &[200]),
        ),
    ]
}

/// Every smuggling vector, each on its own waypoint and backend, checked against the
/// expectation in the table; in every case the backend must never see `/smuggled`, never
/// more than one request, and never both Content-Length and Transfer-Encoding.
#[tokio::test]
async fn attack_http1_request_smuggling_is_refused_or_normalised() {
    let runs = vectors()
        .into_iter()
        .map(|(name, bytes, expect)| async move {
            let f = fixture(ServerLimits::default()).await;
            let answer = exchange(f.waypoint, bytes.as_bytes()).await;
            let seen = f.seen.lock().unwrap().clone();
            (name, expect, answer, seen)
        });
    let mut failures = Vec::new();
    for (name, expect, (answer, closed), seen) in futures::future::join_all(runs).await {
        let codes = statuses(&answer);
        let one_with = |body: &str| seen.len() == 1 && seen[0].body == body.as_bytes();
        let problem = if seen.iter().any(|s| s.path.starts_with("/smuggled")) {
            Some("the backend received the smuggled request")
        } else if seen.iter().any(|s| {
            s.headers.contains_key(http::header::CONTENT_LENGTH)
                && s.headers.contains_key(http::header::TRANSFER_ENCODING)
        }) {
            Some("the backend got both Content-Length and Transfer-Encoding")
        } else {
            let ok = match expect {
                Expect::Refused => codes.first() == Some(&400) && seen.is_empty(),
                Expect::Forwarded(body, want) => one_with(body) && codes == want,
                Expect::ForwardedThenClosed(body) => one_with(body) && codes == [200] && closed,
                Expect::BodyRejected => {
                    !codes.is_empty()
                        && codes.iter().all(|c| *c >= 400)
                        && seen.iter().all(|s| s.body == b"<body error>")
                }
            };
            (!ok).then_some("not the expected handling")
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{name}: {p} ({expect:?}); client got {codes:?} (closed: {closed}); backend saw {:?}",
                seen.iter()
                    .map(|s| format!("{} {} {:?}", s.method, s.path, String::from_utf8_lossy(&s.body)))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A client that sends its header bytes one at a time never finishes its request: the
/// header read timeout closes the connection, and other clients are served meanwhile.
#[tokio::test]
async fn attack_slowloris_is_cut_off_by_the_header_timeout() {
    let f = fixture(ServerLimits {
        header_read_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut slow = TcpStream::connect(f.waypoint).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: order-service\r\nX-Slow: ")
        .await
        .unwrap();
    let start = Instant::now();
    // 100 bytes at 100 ms apiece would take 10 s; the 1 s header timeout must end it first.
    let mut cut_off = None;
    let mut buf = [0u8; 512];
    for _ in 0..100 {
        if slow.write_all(b"a").await.is_err() {
            cut_off = Some(String::new());
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = Some(String::new());
                break;
            }
            Ok(Ok(n)) => {
                cut_off = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                break;
            }
            Err(_) => {}
        }
    }
    let elapsed = start.elapsed();
    let answer = cut_off.expect("the trickling client was never cut off");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed before the timeout: {elapsed:?}"
    );
    assert!(f.seen.lock().unwrap().is_empty());
    // The waypoint is still serving.
    let (answer, _) = exchange(
        f.waypoint,
        b"GET / HTTP/1.1\r\nHost: order-service\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), vec![200], "{answer}");
}

/// Many small headers (below the byte limit but above the count limit) and one huge
/// header: 431, nothing forwarded, and the waypoint keeps serving.
#[tokio::test]
async fn attack_header_floods_get_431() {
    let f = fixture(ServerLimits::default()).await;
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge = format!("X-Big: {}\r\n", "b".repeat(200 * 1024));
    for headers in [many, huge] {
        let req = format!("GET / HTTP/1.1\r\nHost: order-service\r\n{headers}\r\n");
        let (answer, _) = exchange(f.waypoint, req.as_bytes()).await;
        assert_eq!(statuses(&answer), vec![431], "{:.80}", answer);
    }
    assert!(f.seen.lock().unwrap().is_empty());
    let (answer, _) = exchange(
        f.waypoint,
        b"GET / HTTP/1.1\r\nHost: order-service\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&answer), vec![200], "{answer}");
}

/// An HTTP/2 request (prior knowledge) whose header block is `headers`, with `body` as
/// one DATA frame ending the stream. Returns the frame types the waypoint answered on
/// stream 1: a reset, response HEADERS, or nothing.
async fn h2_exchange(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Vec<(u8, u32)> {
    use h2raw::*;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = client_start();
    let end = if body.is_empty() { END_STREAM } else { 0 };
    out.extend(frame(HEADERS, END_HEADERS | end, 1, &hpack(headers)));
    if !body.is_empty() {
        out.extend(frame(DATA, END_STREAM, 1, body));
    }
    s.write_all(&out).await.unwrap();
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, read_frame(&mut s)).await {
        match f.ty {
            RST_STREAM if f.stream == 1 => {
                let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
                answers.push((RST_STREAM, code));
                break;
            }
            HEADERS if f.stream == 1 => {
                answers.push((HEADERS, 0));
                break;
            }
            GOAWAY => {
                let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                answers.push((GOAWAY, code));
                break;
            }
            _ => {}
        }
    }
    answers
}

/// HTTP/2 forbids connection-specific headers (RFC 9113 §8.2.2) and CR/LF/NUL in field
/// values: a request carrying them is malformed and must be reset, never translated to
/// HTTP/1.1 upstream where they would frame a second request.
#[tokio::test]
async fn attack_http2_smuggling_headers_are_rejected() {
    use h2raw::{GOAWAY, HEADERS, PROTOCOL_ERROR, RST_STREAM};
    let f = fixture(ServerLimits::default()).await;
    let base = [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "order-service"),
        (":path", "/"),
    ];
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("transfer-encoding", vec![("transfer-encoding", "chunked")]),
        ("connection", vec![("connection", "keep-alive")]),
        ("keep-alive", vec![("keep-alive", "timeout=5")]),
        ("upgrade", vec![("upgrade", "h2c")]),
        ("te other than trailers", vec![("te", "gzip")]),
        (
            "CRLF in a value",
            vec![("x-a", "b\r\nTransfer-Encoding: chunked")],
        ),
        ("uppercase name", vec![("Transfer-Encoding", "chunked")]),
        (
            "content-length below the DATA length",
            vec![("content-length", "0")],
        ),
    ];
    let mut failures = Vec::new();
    for (name, extra) in cases {
        let headers: Vec<_> = base.iter().copied().chain(extra).collect();
        let answer = h2_exchange(f.waypoint, &headers, body.as_bytes()).await;
        let refused = matches!(
            answer.first(),
            Some((RST_STREAM, PROTOCOL_ERROR)) | Some((GOAWAY, PROTOCOL_ERROR))
        );
        if !refused {
            failures.push(format!("{name}: answered {answer:?}"));
        }
    }
    // A CRLF in :path must not turn into a second request line upstream.
    let answer = h2_exchange(
        f.waypoint,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "order-service"),
            (
                ":path",
                "/ HTTP/1.1\r\nHost: order-service\r\n\r\nGET /smuggled",
            ),
        ],
        b"",
    )
    .await;
    if answer.first().is_some_and(|(ty, _)| *ty == HEADERS) {
        failures.push(format!(":path with CRLF was answered: {answer:?}"));
    }
    let seen = f.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|s| !s.path.starts_with("/smuggled")),
        "{seen:?}"
    );
    // Only the content-length case may have reached the backend before the mismatch was
    // detected, and then with no smuggled body.
    assert!(
        seen.iter()
            .all(|s| s.body.is_empty() || s.body == b"<body error>"),
        "{seen:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
