//! Attack: a GET (a link, a redirect, a cross-site request) changes the ztunnel's log
//! level (issue #18 item 12). State changes need POST.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use meshwork_identity::testing::TestCa;
use meshwork_model::client::ConfigHandle;
use meshwork_ztunnel::{Config, Deps, LogControl, Ztunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    (text[9..12].parse().unwrap(), text)
}

#[tokio::test]
async fn attack_get_does_not_change_the_log_level() {
    let levels = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = levels.clone();
    let control: LogControl = Arc::new(move |l: &str| {
        seen.lock().unwrap().push(l.to_string());
        Ok(())
    });
    let (_tx, handle) = ConfigHandle::manual(World::default().snapshot(1));
    let zt = Ztunnel::start(
        Config::loopback("node-a", ip(44, 1)),
        Deps {
            config: handle,
            signer: Arc::new(TestSigner {
                ca: Arc::new(TestCa::new("cluster.local")),
                ttl: Duration::from_secs(3600),
            }),
            log_control: Some(control),
        },
    )
    .await
    .unwrap();
    let admin = zt.addrs.admin.unwrap();

    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        let (status, text) = request(admin, method, "/logging?level=trace").await;
        assert_eq!(status, 405, "{method} /logging: {text}");
        assert!(text.to_ascii_lowercase().contains("allow: post"), "{text}");
    }
    assert!(
        levels.lock().unwrap().is_empty(),
        "the log level changed without POST: {:?}",
        levels.lock().unwrap()
    );
    let (status, _) = request(admin, "POST", "/logging?level=debug").await;
    assert_eq!(status, 200);
    assert_eq!(*levels.lock().unwrap(), ["debug"]);

    // Reading endpoints stay GET; they change nothing on POST either.
    let (status, _) = request(admin, "GET", "/config_dump").await;
    assert_eq!(status, 200);
    let (status, _) = request(admin, "POST", "/config_dump").await;
    assert_eq!(status, 405);
}
