//! Module fetching against loopback servers: a tiny HTTP file server and
//! `TestRegistryDouble`, a test-only stand-in for an OCI registry implementing the
//! distribution endpoints the fetcher uses (manifests, blobs, a token endpoint).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_model::pb::config::{WasmPlugin, WasmPullPolicy};
use meshwork_wasm::fetch::{oci, sha256_hex, FetchError, Fetcher};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

type Reply = (u16, Vec<(String, String)>, Vec<u8>);
type Handler = Arc<dyn Fn(&Seen, SocketAddr) -> Reply + Send + Sync>;

/// Serves `handler` on 127.0.0.1 (one request per connection), recording requests.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut r = BufReader::new(r);
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let mut authorization = None;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("authorization") {
                                authorization = Some(v.trim().to_string());
                            }
                        }
                    }
                    let seen = Seen {
                        path,
                        authorization,
                    };
                    log.lock().unwrap().push(seen.clone());
                    let (status, headers, body) = handler(&seen, addr);
                    let mut out = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = w.write_all(out.as_bytes()).await;
                    let _ = w.write_all(&body).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Server { addr, seen, task }
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test-only OCI registry double: manifests by tag or digest, blobs by digest, and
/// (optionally) Bearer tokens from `/token`, granted for the expected Basic credentials.
struct TestRegistryDouble {
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    /// (Basic credentials the token endpoint wants, token it grants).
    token: Option<(String, String)>,
}

impl TestRegistryDouble {
    fn new() -> Self {
        TestRegistryDouble {
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            token: None,
        }
    }

    fn blob(&mut self, bytes: &[u8]) -> String {
        let d = format!("sha256:{}", sha256_hex(bytes));
        self.blobs.insert(d.clone(), bytes.to_vec());
        d
    }

    /// Pushes a manifest under `tag` (and its digest); returns the digest's hex.
    fn manifest(&mut self, tag: &str, media_type: &str, layers: &[(&str, &str)]) -> String {
        let config = self.blob(b"{}");
        let layers: Vec<_> = layers
            .iter()
            .map(|(mt, d)| serde_json::json!({"mediaType": mt, "digest": d, "size": 1}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": layers,
        }))
        .unwrap();
        let hex = sha256_hex(&body);
        self.manifests
            .insert(tag.into(), (media_type.into(), body.clone()));
        self.manifests
            .insert(format!("sha256:{hex}"), (media_type.into(), body));
        hex
    }

    async fn serve(self) -> Server {
        let me = Arc::new(self);
        Server::start(Arc::new(move |req: &Seen, addr: SocketAddr| {
            if let Some(q) = req.path.strip_prefix("/token?") {
                let Some((basic, token)) = &me.token else {
                    return (404, vec![], vec![]);
                };
                if req.authorization.as_deref() != Some(basic.as_str())
                    || !q.contains("scope=repository%3Aplugins%2Fauth%3Apull")
                {
                    return (401, vec![], vec![]);
                }
                return (200, vec![], format!("{{\"token\":\"{token}\"}}").into_bytes());
            }
            if let Some((_, token)) = &me.token {
                if req.authorization.as_deref() != Some(&format!("Bearer {token}")) {
                    let challenge = format!(
                        "Bearer realm=\"http://{addr}/token\",service=\"test-registry\",scope=\"repository:plugins/auth:pull\""
                    );
                    return (401, vec![("www-authenticate".into(), challenge)], vec![]);
                }
            }
            let rest = req.path.strip_prefix("/v2/plugins/auth/").unwrap_or_default();
            if let Some(r) = rest.strip_prefix("manifests/") {
                return match me.manifests.get(r) {
                    Some((mt, body)) => (200, vec![("content-type".into(), mt.clone())], body.clone()),
                    None => (404, vec![], vec![]),
                };
            }
            if let Some(d) = rest.strip_prefix("blobs/") {
                return match me.blobs.get(d) {
                    Some(b) => (200, vec![], b.clone()),
                    None => (404, vec![], vec![]),
                };
            }
            (404, vec![], vec![])
        }))
        .await
    }
}

fn plugin(url: &str, sha256: &str) -> WasmPlugin {
    WasmPlugin {
        name: "auth".into(),
        namespace: "shop".into(),
        url: url.into(),
        sha256: sha256.into(),
        ..Default::default()
    }
}

fn fetcher() -> Fetcher {
    Fetcher::with_roots(rustls::RootCertStore::empty())
}

const MODULE: &[u8] = b"\0asm\x01\0\0\0 test module";

fn file_server(body: &'static [u8]) -> Handler {
    Arc::new(move |req: &Seen, _| match req.path.as_str() {
        "/p.wasm" => (200, vec![], body.to_vec()),
        "/moved" => (302, vec![("location".into(), "/p.wasm".into())], vec![]),
        _ => (404, vec![], vec![]),
    })
}

#[tokio::test]
async fn http_download_is_verified_capped_and_follows_redirects() {
    let s = Server::start(file_server(MODULE)).await;
    let url = format!("http://{}/p.wasm", s.addr);
    let sha = sha256_hex(MODULE);
    let m = fetcher().fetch(&plugin(&url, &sha)).await.unwrap();
    assert_eq!(&*m.bytes, MODULE);

    let moved = format!("http://{}/moved", s.addr);
    assert_eq!(
        &*fetcher().fetch(&plugin(&moved, "")).await.unwrap().bytes,
        MODULE
    );

    let err = fetcher()
        .fetch(&plugin(&url, &"0".repeat(64)))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Digest { .. }), "{err}");

    let small = fetcher().with_limits(8, Duration::from_secs(5));
    let err = small.fetch(&plugin(&url, "")).await.unwrap_err();
    assert!(err.to_string().contains("larger than 8 bytes"), "{err}");

    let missing = format!("http://{}/nope.wasm", s.addr);
    let err = fetcher().fetch(&plugin(&missing, "")).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert!(err.to_string().contains("shop/auth"), "{err}");
}

#[tokio::test]
async fn http_download_times_out() {
    // Accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let f = fetcher().with_limits(1 << 20, Duration::from_millis(300));
    let err = f
        .fetch(&plugin(&format!("http://{addr}/p.wasm"), ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("within"), "{err}");
    hold.abort();
}

#[tokio::test]
async fn cache_serves_if_not_present_without_network_and_always_refetches() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(file_server(MODULE)).await;
    let url = format!("http://{}/p.wasm", s.addr);
    let f = fetcher().with_cache(dir.path());
    let mut p = plugin(&url, "");
    p.image_pull_policy = WasmPullPolicy::IfNotPresent as i32;
    f.fetch(&p).await.unwrap();
    assert_eq!(s.count("/p.wasm"), 1);

    let mut always = p.clone();
    always.image_pull_policy = WasmPullPolicy::Always as i32;
    f.fetch(&always).await.unwrap();
    assert_eq!(s.count("/p.wasm"), 2);

    drop(s); // no network from here on
    let m = f.fetch(&p).await.unwrap();
    assert_eq!(&*m.bytes, MODULE);
    // Pinned by digest: found under its digest, whatever the url.
    let mut pinned = plugin("http://127.0.0.1:9/elsewhere.wasm", &sha256_hex(MODULE));
    pinned.image_pull_policy = WasmPullPolicy::IfNotPresent as i32;
    assert_eq!(&*f.fetch(&pinned).await.unwrap().bytes, MODULE);
    // A cached module that does not match the pin is not used (and the fetch fails).
    let mut wrong = p.clone();
    wrong.sha256 = "1".repeat(64);
    assert!(f.fetch(&wrong).await.is_err());
}

#[tokio::test]
async fn oci_artifact_with_token_dance_and_pull_secret() {
    let mut reg = TestRegistryDouble::new();
    let layer = reg.blob(MODULE);
    let config2 = reg.blob(b"{\"a\":1}");
    let manifest = reg.manifest(
        "v1",
        oci::OCI_MANIFEST,
        &[
            (
                "application/vnd.module.wasm.content.image.config.v1+json",
                &config2,
            ),
            (oci::WASM_LAYER, &layer),
        ],
    );
    let basic = "Basic dXNlcjpwYXNz".to_string();
    reg.token = Some((basic.clone(), "t0k3n".into()));
    let s = reg.serve().await;

    let url = format!("oci://{}/plugins/auth:v1", s.addr);
    let mut p = plugin(&url, "");
    p.pull_auth = basic.clone();
    let m = fetcher().fetch(&p).await.unwrap();
    assert_eq!(&*m.bytes, MODULE);
    assert!(s.count("/token") >= 1);

    // Istio pins OCI plugins by the manifest digest; the module's digest works too.
    p.sha256 = manifest.clone();
    assert!(fetcher().fetch(&p).await.is_ok());
    p.sha256 = sha256_hex(MODULE);
    assert!(fetcher().fetch(&p).await.is_ok());
    p.sha256 = "2".repeat(64);
    let err = fetcher().fetch(&p).await.unwrap_err();
    assert!(matches!(err, FetchError::Digest { .. }), "{err}");

    // By digest.
    let by_digest = format!("oci://{}/plugins/auth@sha256:{manifest}", s.addr);
    let mut p2 = plugin(&by_digest, "");
    p2.pull_auth = basic;
    assert!(fetcher().fetch(&p2).await.is_ok());

    // Wrong or no credentials: refused by the token endpoint.
    let mut bad = plugin(&url, "");
    bad.pull_auth = "Basic d3Jvbmc6d3Jvbmc=".into();
    let err = fetcher().fetch(&bad).await.unwrap_err();
    assert!(err.to_string().contains("token endpoint"), "{err}");
    assert!(
        !err.to_string().contains("d3Jvbmc"),
        "credentials leaked: {err}"
    );
    assert!(fetcher().fetch(&plugin(&url, "")).await.is_err());
}

/// A tar.gz layer with `files`.
fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        let size = format!("{:011o}", data.len());
        h[124..135].copy_from_slice(size.as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn docker_and_oci_images_carry_plugin_wasm_in_their_last_layer() {
    let mut reg = TestRegistryDouble::new();
    let base = reg.blob(&tar_gz(&[("etc/os-release", b"x")]));
    let last = reg.blob(&tar_gz(&[("README", b"hello"), ("plugin.wasm", MODULE)]));
    reg.manifest(
        "docker",
        oci::DOCKER_MANIFEST,
        &[(oci::DOCKER_LAYER, &base), (oci::DOCKER_LAYER, &last)],
    );
    reg.manifest("oci", oci::OCI_MANIFEST, &[(oci::OCI_LAYER, &last)]);
    let empty = reg.blob(&tar_gz(&[("README", b"no module")]));
    reg.manifest("empty", oci::OCI_MANIFEST, &[(oci::OCI_LAYER, &empty)]);
    let s = reg.serve().await;
    for tag in ["docker", "oci"] {
        let p = plugin(&format!("oci://{}/plugins/auth:{tag}", s.addr), "");
        assert_eq!(&*fetcher().fetch(&p).await.unwrap().bytes, MODULE, "{tag}");
    }
    let p = plugin(&format!("oci://{}/plugins/auth:empty", s.addr), "");
    let err = fetcher().fetch(&p).await.unwrap_err();
    assert!(err.to_string().contains("no plugin.wasm"), "{err}");
}

#[tokio::test]
async fn latest_is_pulled_again_and_other_tags_come_from_the_cache() {
    let mut reg = TestRegistryDouble::new();
    let config2 = reg.blob(b"{\"b\":2}");
    let layer = reg.blob(MODULE);
    for tag in ["latest", "v1"] {
        reg.manifest(
            tag,
            oci::OCI_MANIFEST,
            &[
                (
                    "application/vnd.module.wasm.content.image.config.v1+json",
                    &config2,
                ),
                (oci::WASM_LAYER, &layer),
            ],
        );
    }
    let s = reg.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let f = fetcher().with_cache(dir.path());
    let latest = plugin(&format!("oci://{}/plugins/auth", s.addr), "");
    let v1 = plugin(&format!("oci://{}/plugins/auth:v1", s.addr), "");
    for _ in 0..2 {
        f.fetch(&latest).await.unwrap();
        f.fetch(&v1).await.unwrap();
    }
    assert_eq!(s.count("/v2/plugins/auth/manifests/latest"), 2);
    assert_eq!(s.count("/v2/plugins/auth/manifests/v1"), 1);
}

#[tokio::test]
async fn tampered_blobs_are_refused() {
    let mut reg = TestRegistryDouble::new();
    let config2 = reg.blob(b"{\"c\":3}");
    let layer = format!("sha256:{}", sha256_hex(b"what the manifest promised"));
    reg.blobs.insert(layer.clone(), MODULE.to_vec());
    reg.manifest(
        "v1",
        oci::OCI_MANIFEST,
        &[
            (
                "application/vnd.module.wasm.content.image.config.v1+json",
                &config2,
            ),
            (oci::WASM_LAYER, &layer),
        ],
    );
    let s = reg.serve().await;
    let err = fetcher()
        .fetch(&plugin(&format!("oci://{}/plugins/auth:v1", s.addr), ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("content has digest"), "{err}");
}
