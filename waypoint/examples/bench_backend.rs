//! Benchmark backend: answers every request (HTTP/1.1 or h2c) with 200 and a fixed-size
//! body. Usage: bench_backend <listen-addr> [body-bytes, default 1024]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18080".into());
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let body = Bytes::from(vec![b'x'; size]);
    let l = TcpListener::bind(&addr).await?;
    eprintln!("backend on {addr}, {size}-byte bodies");
    loop {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(body))) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
