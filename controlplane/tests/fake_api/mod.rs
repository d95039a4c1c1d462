//! A small fake Kubernetes API server on loopback, spoken to over real HTTP by a real
//! `kube::Client` (the style of kube-rs' and linkerd's policy-controller tests).
//!
//! What it implements, and no more:
//! - list (with `limit`/`continue` paging) and watch (`?watch=true` from a
//!   `resourceVersion`, newline-delimited events) of any collection;
//! - discovery of `/apis/<group>/<version>`: the built-in `discovery.k8s.io/v1`, and every
//!   group/version served by a stored CustomResourceDefinition (so installing a CRD
//!   object makes its kind appear, as on a real server);
//! - `GET` of one object; `PATCH …/status` as JSON merge patch (honouring a
//!   `metadata.resourceVersion` precondition with `409 Conflict`) or as server-side apply
//!   (`application/apply-patch+yaml`, `fieldManager` required, `force`): the manager owns
//!   the top-level `status` fields it sends and, in `status.conditions`, the entries
//!   whose `type` it sends (the list-map key); entries and fields it owned and no longer
//!   sends are removed; taking a field another manager owns needs `force`, else `409`;
//! - `POST` of a new object into a collection: `201 Created`, or `409 AlreadyExists` when
//!   the name is taken (creation is atomic, as on a real server);
//! - `403 Forbidden` on the collections [`FakeApi::forbid`] names.
//!
//! Every write bumps the global `resourceVersion` and is logged for watchers.
#![allow(dead_code)]

mod patch;

pub use patch::FakeState;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// `(group, plural)`; the core group is `""`.
pub type Coll = (String, String);
type Key = (String, String);

struct LogEntry {
    rv: u64,
    coll: Coll,
    namespace: String,
    kind: &'static str,
    object: Arc<str>,
}

type AfterGet = Box<dyn FnOnce(&mut State) + Send>;

/// A refused write: `(code, reason, message)`, answered as a `Status`.
struct Refusal(u16, &'static str, String);

impl Refusal {
    fn response(self) -> Response<Body> {
        status(self.0, self.1, &self.2)
    }
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Coll, BTreeMap<Key, Arc<str>>>,
    log: Vec<LogEntry>,
    forbidden: BTreeSet<Coll>,
    /// (coll, key, manager) → owned status fields: `"f:<field>"` and `"c:<condition type>"`.
    owners: BTreeMap<(Coll, Key, String), BTreeSet<String>>,
    /// Called (once) after the next successful `GET` of an object: lets a test slip a
    /// concurrent write between a read and the write that follows it.
    after_get: Option<AfterGet>,
    requests: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    /// Bumped to end every open watch (as an API server restart does).
    epoch: watch::Sender<u64>,
    pub addr: SocketAddr,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "code": code, "message": message}),
    )
}

fn name_of(v: &Value) -> Key {
    let s = |f: &str| v["metadata"][f].as_str().unwrap_or_default().to_string();
    (s("namespace"), s("name"))
}

impl State {
    fn write(&mut self, coll: &Coll, mut obj: Value, kind: &'static str) -> Value {
        self.rv += 1;
        let key = name_of(&obj);
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let text: Arc<str> = Arc::from(obj.to_string());
        let objects = self.objects.entry(coll.clone()).or_default();
        match kind {
            "DELETED" => {
                objects.remove(&key);
            }
            _ => {
                objects.insert(key.clone(), text.clone());
            }
        }
        self.log.push(LogEntry {
            rv: self.rv,
            coll: coll.clone(),
            namespace: key.0,
            kind,
            object: text,
        });
        obj
    }

    fn get(&self, coll: &Coll, key: &Key) -> Option<Value> {
        let text = self.objects.get(coll)?.get(key)?;
        serde_json::from_str(text).ok()
    }

    /// Group/versions served by stored CRDs, with their resources.
    fn crd_resources(&self, group: &str, version: &str) -> Vec<Value> {
        let crds = (
            "apiextensions.k8s.io".to_string(),
            "customresourcedefinitions".into(),
        );
        self.objects
            .get(&crds)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|t| serde_json::from_str::<Value>(t).ok())
            .filter(|c| c["spec"]["group"] == group)
            .filter(|c| {
                c["spec"]["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v["name"] == version && v["served"] == true)
            })
            .map(|c| {
                json!({"name": c["spec"]["names"]["plural"], "singularName": "",
                       "kind": c["spec"]["names"]["kind"],
                       "namespaced": c["spec"]["scope"] == "Namespaced",
                       "verbs": ["get", "list", "watch", "patch"]})
            })
            .collect()
    }
}

/// The parsed request path.
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, status) = match rest {
        [] => (None, None, false),
        [p] => (Some(p.to_string()), None, false),
        [p, n] => (Some(p.to_string()), Some(n.to_string()), false),
        [p, n, "status"] => (Some(p.to_string()), Some(n.to_string()), true),
        _ => return None,
    };
    Some(Target {
        group,
        version,
        namespace,
        plural,
        name,
        status,
    })
}

fn query(q: &str) -> BTreeMap<String, String> {
    url_pairs(q).collect()
}

fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k.to_string(), v.replace("%2F", "/").replace("%3A", ":"))
    })
}

impl FakeApi {
    /// Serves on `127.0.0.1:0` until the runtime ends.
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changed, _) = watch::channel(0);
        let (epoch, _) = watch::channel(0);
        let api = FakeApi {
            state: Arc::default(),
            changed,
            epoch,
            addr,
        };
        let me = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        api
    }

    /// A client of this server.
    pub fn client(&self) -> kube::Client {
        let url: http::Uri = format!("http://{}", self.addr).parse().unwrap();
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        kube::Client::try_from(config).unwrap()
    }

    fn notify(&self) {
        let rv = self.state.lock().unwrap().rv;
        self.changed.send_replace(rv);
    }

    /// Creates or replaces `obj` in `(group, plural)` (logged: watchers see it).
    pub fn put(&self, group: &str, plural: &str, obj: Value) -> Value {
        let coll = (group.to_string(), plural.to_string());
        let out = {
            let mut s = self.state.lock().unwrap();
            let kind = if s.get(&coll, &name_of(&obj)).is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.write(&coll, obj, kind)
        };
        self.notify();
        out
    }

    /// Stores many objects before anyone watches (not logged: a later list sees them).
    pub fn seed(&self, group: &str, plural: &str, objs: impl IntoIterator<Item = Value>) {
        let coll = (group.to_string(), plural.to_string());
        let mut s = self.state.lock().unwrap();
        for mut obj in objs {
            s.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            let key = name_of(&obj);
            let text: Arc<str> = Arc::from(obj.to_string());
            s.objects.entry(coll.clone()).or_default().insert(key, text);
        }
    }

    pub fn delete(&self, group: &str, plural: &str, namespace: &str, name: &str) {
        let coll = (group.to_string(), plural.to_string());
        {
            let mut s = self.state.lock().unwrap();
            let key = (namespace.to_string(), name.to_string());
            if let Some(obj) = s.get(&coll, &key) {
                s.write(&coll, obj, "DELETED");
            }
        }
        self.notify();
    }

    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let coll = (group.to_string(), plural.to_string());
        self.state
            .lock()
            .unwrap()
            .get(&coll, &(namespace.to_string(), name.to_string()))
    }

    /// Installs a namespaced CRD serving `versions`.
    pub fn install_crd(&self, group: &str, kind: &str, plural: &str, versions: &[&str]) {
        let versions: Vec<Value> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"name": v, "served": true, "storage": i == 0}))
            .collect();
        self.put(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": format!("{plural}.{group}")},
                   "spec": {"group": group, "scope": "Namespaced",
                            "names": {"kind": kind, "plural": plural},
                            "versions": versions}}),
        );
    }

    pub fn uninstall_crd(&self, group: &str, plural: &str) {
        self.delete(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            &format!("{plural}.{group}"),
        );
    }

    /// Lists and watches of `(group, plural)` answer `403 Forbidden`.
    pub fn forbid(&self, group: &str, plural: &str) {
        let mut s = self.state.lock().unwrap();
        s.forbidden.insert((group.to_string(), plural.to_string()));
    }

    /// Ends every open watch: the clients list again (as after an API server restart).
    pub fn end_watches(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Lifts [`FakeApi::forbid`].
    pub fn allow(&self, group: &str, plural: &str) {
        let mut s = self.state.lock().unwrap();
        s.forbidden.remove(&(group.to_string(), plural.to_string()));
    }

    /// Runs `f` on the state right after the next successful object `GET`.
    pub fn after_next_get(&self, f: impl FnOnce(&mut FakeState) + Send + 'static) {
        self.state.lock().unwrap().after_get = Some(Box::new(move |s: &mut State| {
            f(&mut FakeState(s));
        }));
    }

    /// `METHOD path?query content-type` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let q = query(parts.uri.query().unwrap_or_default());
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.state.lock().unwrap().requests.push(format!(
            "{} {}?{} {content_type}",
            parts.method,
            parts.uri.path(),
            parts.uri.query().unwrap_or_default()
        ));
        let Some(t) = parse_path(parts.uri.path()) else {
            return status(404, "NotFound", "no such path");
        };
        let Some(plural) = t.plural.clone() else {
            return self.discovery(&t);
        };
        let coll = (t.group.clone(), plural.clone());
        if self.state.lock().unwrap().forbidden.contains(&coll) {
            return status(
                403,
                "Forbidden",
                &format!("{plural}.{} is forbidden: no RBAC", t.group),
            );
        }
        let api_version = if t.group.is_empty() {
            t.version.clone()
        } else {
            format!("{}/{}", t.group, t.version)
        };
        match (&parts.method, &t.name) {
            (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(coll, t.namespace, &q)
            }
            (&Method::GET, None) => self.list(&coll, t.namespace.as_deref(), &api_version, &q),
            (&Method::GET, Some(name)) => {
                let key = (t.namespace.clone().unwrap_or_default(), name.clone());
                let mut s = self.state.lock().unwrap();
                match s.get(&coll, &key) {
                    Some(obj) => {
                        if let Some(f) = s.after_get.take() {
                            f(&mut s);
                            drop(s);
                            self.notify();
                        }
                        full(StatusCode::OK, &obj)
                    }
                    None => status(404, "NotFound", &format!("{plural} {name} not found")),
                }
            }
            (&Method::POST, None) => {
                let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                    return status(400, "BadRequest", "body is not JSON");
                };
                if let Some(ns) = &t.namespace {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                let key = name_of(&obj);
                let created = {
                    let mut s = self.state.lock().unwrap();
                    if s.get(&coll, &key).is_some() {
                        None
                    } else {
                        Some(s.write(&coll, obj, "ADDED"))
                    }
                };
                match created {
                    Some(obj) => {
                        self.notify();
                        full(StatusCode::CREATED, &obj)
                    }
                    None => status(
                        409,
                        "AlreadyExists",
                        &format!("{plural} {:?} already exists", key.1),
                    ),
                }
            }
            (&Method::PATCH, Some(name)) if t.status => {
                let key = (t.namespace.clone().unwrap_or_default(), name.clone());
                let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                    return status(400, "BadRequest", "patch is not JSON");
                };
                let res = if content_type == "application/apply-patch+yaml" {
                    let force = q.get("force").is_some_and(|f| f == "true");
                    match q.get("fieldManager") {
                        Some(m) if !m.is_empty() => self.apply_status(&coll, &key, m, patch, force),
                        _ => Err(Refusal(
                            400,
                            "BadRequest",
                            "fieldManager is required for apply".into(),
                        )),
                    }
                } else if content_type == "application/merge-patch+json" {
                    self.merge_status(&coll, &key, patch)
                } else {
                    Err(Refusal(415, "UnsupportedMediaType", content_type.clone()))
                };
                match res {
                    Ok(v) => {
                        self.notify();
                        full(StatusCode::OK, &v)
                    }
                    Err(r) => r.response(),
                }
            }
            _ => status(405, "MethodNotAllowed", "not implemented by the fake API"),
        }
    }

    fn discovery(&self, t: &Target) -> Response<Body> {
        let gv = if t.group.is_empty() {
            t.version.clone()
        } else {
            format!("{}/{}", t.group, t.version)
        };
        let resources = match gv.as_str() {
            "discovery.k8s.io/v1" => vec![json!({"name": "endpointslices", "singularName": "",
                "kind": "EndpointSlice", "namespaced": true, "verbs": ["list", "watch"]})],
            _ => self
                .state
                .lock()
                .unwrap()
                .crd_resources(&t.group, &t.version),
        };
        if resources.is_empty() {
            return status(404, "NotFound", &format!("{gv} not served"));
        }
        full(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": resources}),
        )
    }

    fn list(
        &self,
        coll: &Coll,
        namespace: Option<&str>,
        api_version: &str,
        q: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let s = self.state.lock().unwrap();
        let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
        let limit: usize = q
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        let all: Vec<&Arc<str>> = s
            .objects
            .get(coll)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, v)| v)
            .collect();
        let end = start.saturating_add(limit).min(all.len());
        // Built as text: the items are stored as text, and a 20k-object list stays cheap.
        let items: Vec<&str> = all[start.min(end)..end].iter().map(|t| &***t).collect();
        let mut meta = json!({"resourceVersion": s.rv.to_string()});
        if end < all.len() {
            meta["continue"] = json!(end.to_string());
        }
        let text = format!(
            r#"{{"apiVersion":"{api_version}","kind":"List","metadata":{meta},"items":[{}]}}"#,
            items.join(",")
        );
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(text)).boxed())
            .unwrap()
    }

    fn watch(
        &self,
        coll: Coll,
        namespace: Option<String>,
        q: &BTreeMap<String, String>,
    ) -> Response<Body> {
        let mut from: u64 = q
            .get("resourceVersion")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
        let state = self.state.clone();
        let mut changed = self.changed.subscribe();
        let mut epoch = self.epoch.subscribe();
        tokio::spawn(async move {
            loop {
                let lines: Vec<String> = {
                    let s = state.lock().unwrap();
                    let start = s.log.partition_point(|e| e.rv <= from);
                    let lines = s.log[start..]
                        .iter()
                        .filter(|e| e.coll == coll)
                        .filter(|e| namespace.as_ref().is_none_or(|ns| *ns == e.namespace))
                        .map(|e| format!(r#"{{"type":"{}","object":{}}}"#, e.kind, e.object))
                        .collect();
                    from = s.rv;
                    lines
                };
                for l in lines {
                    if tx
                        .send(Ok(Frame::data(Bytes::from(l + "\n"))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    _ = epoch.changed() => return,
                }
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BodyExt::boxed(body))
            .unwrap()
    }
}
