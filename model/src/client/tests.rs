//! The subscription client against a recording MeshConfig server on 127.0.0.1: every
//! stream gets one update and is then closed, so the client keeps reconnecting.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::keys::make_resource;
use crate::pb::config::mesh_config_server::{MeshConfig, MeshConfigServer};
use crate::pb::config::{resource, MeshSettings};

/// Records the token of each subscription; answers with one update, then hangs up.
#[derive(Clone, Default)]
struct Recorder {
    tokens: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl MeshConfig for Recorder {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

    async fn stream(
        &self,
        req: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound.message().await?;
        let Some(ProxyMessage {
            msg: Some(proxy_message::Msg::Subscribe(sub)),
        }) = first
        else {
            return Err(Status::invalid_argument("expected Subscribe"));
        };
        self.tokens.lock().unwrap().push(sub.token);
        let key = "mesh".to_string();
        let update = ConfigUpdate {
            nonce: "n".into(),
            version: 1,
            initial: true,
            resources: vec![make_resource(
                key.clone(),
                resource::Kind::Mesh(MeshSettings {
                    trust_domain: "cluster.local".into(),
                    ..Default::default()
                }),
            )],
            removed: vec![],
            more: false,
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(update)]))))
    }
}

async fn serve(rec: Recorder) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MeshConfigServer::new(rec))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn temp_token(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshwork-client-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, content).unwrap();
    path
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn subscription(path: &Path) -> Subscription {
    Subscription {
        kind: ProxyKind::Ztunnel,
        node: "node-a".into(),
        proxy_id: "test".into(),
        token: TokenSource::File(path.to_path_buf()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_rotated_token_file_is_presented_at_the_next_reconnect() {
    let rec = Recorder::default();
    let endpoint = serve(rec.clone()).await;
    let path = temp_token("rotate", "first\n");
    let handle = spawn(endpoint, subscription(&path), None);
    wait_until("the first subscription", || !rec.tokens().is_empty()).await;
    std::fs::write(&path, "second\n").unwrap();
    wait_until("a subscription with the new token", || {
        rec.tokens().last().map(String::as_str) == Some("second")
    })
    .await;
    let seen = rec.tokens();
    assert_eq!(seen[0], "first");
    assert!(
        seen.iter().all(|t| t == "first" || t == "second"),
        "{seen:?}"
    );
    assert!(handle.status().synced);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn an_unreadable_token_file_keeps_the_config_and_retries() {
    let rec = Recorder::default();
    let endpoint = serve(rec.clone()).await;
    let path = temp_token("unreadable", "first");
    let handle = spawn(endpoint, subscription(&path), None);
    handle.wait_synced(Duration::from_secs(5)).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let shown = path.display().to_string();
    wait_until("the token error in the status", || {
        handle
            .status()
            .last_error
            .is_some_and(|e| e.contains("no token to subscribe with") && e.contains(&shown))
    })
    .await;
    let count = rec.tokens().len();
    assert!(
        handle.snapshot().get("mesh").is_some(),
        "the last good config is kept"
    );
    std::fs::write(&path, "renewed").unwrap();
    wait_until("a subscription once the file is back", || {
        rec.tokens().len() > count && rec.tokens().last().map(String::as_str) == Some("renewed")
    })
    .await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn an_update_in_parts_is_applied_whole() {
    let part = |nonce: &str, key: &str, more: bool| ConfigUpdate {
        nonce: nonce.into(),
        version: 9,
        resources: vec![make_resource(
            key.into(),
            resource::Kind::Mesh(MeshSettings::default()),
        )],
        removed: vec![format!("gone-{key}")],
        more,
        ..Default::default()
    };
    let mut parts = None;
    assert!(assemble(&mut parts, part("1-1", "a", true)).is_none());
    assert!(assemble(&mut parts, part("1-1", "b", true)).is_none());
    let whole = assemble(&mut parts, part("1-1", "c", false)).unwrap();
    let keys: Vec<_> = whole.resources.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(whole.removed, ["gone-a", "gone-b", "gone-c"]);
    assert_eq!(
        (whole.nonce.as_str(), whole.version, whole.more),
        ("1-1", 9, false)
    );
    assert!(parts.is_none());

    // An update in one message passes through; a new nonce drops unfinished parts.
    let single = assemble(&mut parts, part("1-2", "d", false)).unwrap();
    assert_eq!(single.resources.len(), 1);
    assert!(assemble(&mut parts, part("1-3", "e", true)).is_none());
    let next = assemble(&mut parts, part("1-4", "f", false)).unwrap();
    let keys: Vec<_> = next.resources.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["f"]);
}
