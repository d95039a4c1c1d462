//! Against a small stateful API server (Secrets only, with the API server's create
//! semantics: 201, or 409 AlreadyExists), shared by two replicas.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use meshwork_identity::{CertRequest, SpiffeId};
use serde_json::{json, Value};
use tokio::sync::Barrier;

use super::*;

#[derive(Clone)]
struct SecretsApi {
    secrets: Arc<Mutex<BTreeMap<String, Value>>>,
    /// The first GETs of `meshwork-ca-secret` wait for each other: both replicas see "no
    /// CA yet" before either creates one — the race this must survive.
    race: Arc<Barrier>,
    creates: Arc<Mutex<Vec<u16>>>,
}

impl SecretsApi {
    fn new(replicas: usize) -> Self {
        SecretsApi {
            secrets: Arc::default(),
            race: Arc::new(Barrier::new(replicas)),
            creates: Arc::default(),
        }
    }

    fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let path = parts.uri.path().to_string();
                let prefix = "/api/v1/namespaces/istio-system/secrets";
                let (status, answer) = match (parts.method.clone(), path.strip_prefix(prefix)) {
                    (Method::GET, Some(name)) => {
                        let name = name.trim_start_matches('/').to_string();
                        let found = me.secrets.lock().unwrap().get(&name).cloned();
                        if name == SELF_SIGNED_SECRET && me.creates.lock().unwrap().is_empty() {
                            me.race.wait().await;
                        }
                        match found {
                            Some(s) => (200, s),
                            None => (404, status(404, "NotFound")),
                        }
                    }
                    (Method::POST, Some("")) => {
                        let obj: Value = serde_json::from_slice(&bytes).unwrap();
                        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                        let mut secrets = me.secrets.lock().unwrap();
                        let code = match secrets.entry(name) {
                            std::collections::btree_map::Entry::Occupied(_) => 409,
                            std::collections::btree_map::Entry::Vacant(v) => {
                                v.insert(obj.clone());
                                201
                            }
                        };
                        me.creates.lock().unwrap().push(code);
                        if code == 201 {
                            (201, obj)
                        } else {
                            (409, status(409, "AlreadyExists"))
                        }
                    }
                    _ => (404, status(404, "NotFound")),
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(svc, "default")
    }

    fn put(&self, name: &str, data: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::to_value(ByteString(v.as_bytes().to_vec())).unwrap(),
                )
            })
            .collect();
        self.secrets.lock().unwrap().insert(
            name.into(),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": "istio-system"}, "data": data}),
        );
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "reason": reason, "code": code, "message": reason})
}

fn leaf_root(ca: &Ca) -> Vec<u8> {
    let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
    let req = CertRequest::generate(&id).unwrap();
    let chain = ca.sign(req.csr_pem(), None, |_| Ok(())).unwrap();
    let cert = req.into_certificate(&chain, None).unwrap();
    cert.roots().roots()[0].to_vec()
}

#[tokio::test]
async fn two_replicas_racing_on_a_new_cluster_sign_into_one_root() {
    let api = SecretsApi::new(2);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ra, rb) = (
        CaSecrets::new(api.client(), "istio-system"),
        CaSecrets::new(api.client(), "istio-system"),
    );
    let (x, y) = tokio::join!(
        ra.materialize(a.path(), "cluster.local"),
        rb.materialize(b.path(), "cluster.local")
    );
    x.unwrap();
    y.unwrap();
    let mut creates = api.creates.lock().unwrap().clone();
    creates.sort();
    assert_eq!(creates, vec![201, 409], "both tried; exactly one won");

    let ca_a = Ca::open(a.path(), CaConfig::new("cluster.local")).unwrap();
    let ca_b = Ca::open(b.path(), CaConfig::new("cluster.local")).unwrap();
    assert_eq!(
        leaf_root(&ca_a),
        leaf_root(&ca_b),
        "one root for both replicas"
    );

    // A restart (an empty directory) finds the same root.
    let c = tempfile::tempdir().unwrap();
    CaSecrets::new(api.client(), "istio-system")
        .materialize(c.path(), "cluster.local")
        .await
        .unwrap();
    let ca_c = Ca::open(c.path(), CaConfig::new("cluster.local")).unwrap();
    assert_eq!(leaf_root(&ca_a), leaf_root(&ca_c));
    assert_eq!(
        api.creates.lock().unwrap().len(),
        2,
        "nothing created again"
    );
}

#[tokio::test]
async fn istio_cacerts_wins_and_its_rotation_reaches_the_directory() {
    let api = SecretsApi::new(1);
    let source = tempfile::tempdir().unwrap();
    // Material laid out by another CA (a self-signed root standing in for an offline one).
    Ca::open(source.path(), CaConfig::new("cluster.local")).unwrap();
    let root = std::fs::read_to_string(source.path().join(ROOT_CERT_FILE)).unwrap();
    let key = std::fs::read_to_string(source.path().join(KEY_FILE)).unwrap();
    api.put(
        PLUGIN_SECRET,
        &[
            (PLUGIN_CERT_FILE, &root),
            (KEY_FILE, &key),
            (PLUGIN_ROOTS_FILE, &root),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let secrets = CaSecrets::new(api.client(), "istio-system");
    secrets
        .materialize(dir.path(), "cluster.local")
        .await
        .unwrap();
    assert!(
        api.creates.lock().unwrap().is_empty(),
        "cacerts is used as is"
    );
    let ca = Ca::open(dir.path(), CaConfig::new("cluster.local")).unwrap();
    assert_eq!(ca.trust_bundle().len(), 1);
    let before = crate::ca::fingerprint(dir.path());
    assert!(secrets.sync(dir.path()).await.unwrap());
    assert_eq!(
        crate::ca::fingerprint(dir.path()),
        before,
        "an unchanged Secret rewrites nothing"
    );

    // Rotation step 1: a second root joins root-cert.pem.
    let other = tempfile::tempdir().unwrap();
    Ca::open(other.path(), CaConfig::new("cluster.local")).unwrap();
    let new_root = std::fs::read_to_string(other.path().join(ROOT_CERT_FILE)).unwrap();
    api.put(
        PLUGIN_SECRET,
        &[
            (PLUGIN_CERT_FILE, &root),
            (KEY_FILE, &key),
            (PLUGIN_ROOTS_FILE, &format!("{root}{new_root}")),
        ],
    );
    secrets.sync(dir.path()).await.unwrap();
    assert_ne!(crate::ca::fingerprint(dir.path()), before);
    let ca = Ca::reload(dir.path(), CaConfig::new("cluster.local")).unwrap();
    assert_eq!(ca.trust_bundle().len(), 2);
}

#[tokio::test]
async fn a_secret_missing_a_key_is_an_error_naming_it() {
    let api = SecretsApi::new(1);
    api.put(PLUGIN_SECRET, &[(PLUGIN_CERT_FILE, "x")]);
    let dir = tempfile::tempdir().unwrap();
    let e = CaSecrets::new(api.client(), "istio-system")
        .materialize(dir.path(), "cluster.local")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Secret istio-system/cacerts: missing key \"ca-key.pem\""
    );
}
