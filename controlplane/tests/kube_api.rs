//! Requests the Kubernetes side makes (TokenReview, pod lookups, status patches, leases),
//! checked against a recorded mock API server: `kube::Client::new` over a hand-written
//! `tower::Service` that answers canned JSON and records method, path and body.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use meshwork_controlplane::source::kube::{NodeAuthError, TokenReviewAuthenticator};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: Option<String>,
    content_type: Option<String>,
    body: Value,
}

type Route = (Method, String, StatusCode, Value);

#[derive(Clone, Default)]
struct MockApi {
    routes: Arc<Mutex<Vec<Route>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl MockApi {
    fn on(&self, method: Method, path: &str, status: u16, body: Value) {
        self.routes.lock().unwrap().push((
            method,
            path.to_string(),
            StatusCode::from_u16(status).unwrap(),
            body,
        ));
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn client(&self) -> Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                };
                let path = parts.uri.path().to_string();
                me.requests.lock().unwrap().push(Recorded {
                    method: parts.method.clone(),
                    path: path.clone(),
                    query: parts.uri.query().map(String::from),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().to_string()),
                    body,
                });
                let found = me
                    .routes
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(m, p, _, _)| *m == parts.method && *p == path)
                    .map(|(_, _, s, b)| (*s, b.clone()));
                let (status, body) = found.unwrap_or((
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
                ));
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                )
            }
        });
        Client::new(svc, "default")
    }
}

const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

fn review_answer(username: &str, pod: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {},
        "status": {
            "authenticated": true,
            "audiences": ["istio-ca"],
            "user": {
                "username": username,
                "extra": {
                    "authentication.kubernetes.io/pod-name": [pod],
                    "authentication.kubernetes.io/pod-uid": [uid]
                }
            }
        }
    })
}

fn pod(name: &str, uid: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "istio-system", "uid": uid},
        "spec": {"nodeName": node, "containers": [{"name": "ztunnel"}]}
    })
}

fn authenticator(api: &MockApi) -> TokenReviewAuthenticator {
    TokenReviewAuthenticator::new(
        api.client(),
        "istio-ca",
        [("istio-system".to_string(), "meshwork-ztunnel".to_string())],
    )
}

#[tokio::test]
async fn token_review_maps_the_token_pod_to_its_node() {
    let api = MockApi::default();
    api.on(
        Method::POST,
        REVIEWS,
        201,
        review_answer(
            "system:serviceaccount:istio-system:meshwork-ztunnel",
            "ztunnel-abc",
            "u-1",
        ),
    );
    api.on(
        Method::GET,
        "/api/v1/namespaces/istio-system/pods/ztunnel-abc",
        200,
        pod("ztunnel-abc", "u-1", "node-a"),
    );
    let auth = authenticator(&api);
    assert_eq!(auth.review("tok-a").await.unwrap(), "node-a");
    assert_eq!(
        auth.review_for_node("tok-a", "node-a").await.unwrap(),
        "node-a"
    );

    let reqs = api.requests();
    assert_eq!(reqs[0].method, Method::POST);
    assert_eq!(reqs[0].path, REVIEWS);
    assert_eq!(reqs[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        reqs[0].body["spec"],
        json!({"token": "tok-a", "audiences": ["istio-ca"]})
    );
    assert_eq!(reqs[0].body["kind"], "TokenReview");
    assert_eq!(reqs[1].method, Method::GET);
    assert_eq!(
        reqs[1].path,
        "/api/v1/namespaces/istio-system/pods/ztunnel-abc"
    );
}

#[tokio::test]
async fn token_of_another_nodes_pod_is_refused() {
    let api = MockApi::default();
    api.on(
        Method::POST,
        REVIEWS,
        201,
        review_answer(
            "system:serviceaccount:istio-system:meshwork-ztunnel",
            "ztunnel-b",
            "u-2",
        ),
    );
    api.on(
        Method::GET,
        "/api/v1/namespaces/istio-system/pods/ztunnel-b",
        200,
        pod("ztunnel-b", "u-2", "node-b"),
    );
    let err = authenticator(&api)
        .review_for_node("tok-b", "node-a")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NodeAuthError::PermissionDenied(m) if m.contains("node-b") && m.contains("node-a")),
        "{err}"
    );
}

#[tokio::test]
async fn refusals_name_their_reason() {
    // Not authenticated by the API server.
    let api = MockApi::default();
    api.on(
        Method::POST,
        REVIEWS,
        201,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
               "status": {"authenticated": false, "error": "token expired"}}),
    );
    let err = authenticator(&api).review("old").await.unwrap_err();
    assert_eq!(err, NodeAuthError::Unauthenticated("token expired".into()));
    assert_eq!(api.requests().len(), 1, "no pod lookup for a bad token");

    // An application pod's token must not act for its node.
    let api = MockApi::default();
    api.on(
        Method::POST,
        REVIEWS,
        201,
        review_answer(
            "system:serviceaccount:production:order-service",
            "order-1",
            "u-3",
        ),
    );
    let err = authenticator(&api).review("app").await.unwrap_err();
    assert!(
        matches!(&err, NodeAuthError::PermissionDenied(m) if m.contains("production/order-service")),
        "{err}"
    );

    // The pod was deleted and recreated under the same name: the old token is void.
    let api = MockApi::default();
    api.on(
        Method::POST,
        REVIEWS,
        201,
        review_answer(
            "system:serviceaccount:istio-system:meshwork-ztunnel",
            "ztunnel-c",
            "old-uid",
        ),
    );
    api.on(
        Method::GET,
        "/api/v1/namespaces/istio-system/pods/ztunnel-c",
        200,
        pod("ztunnel-c", "new-uid", "node-c"),
    );
    let err = authenticator(&api).review("stale").await.unwrap_err();
    assert!(
        matches!(&err, NodeAuthError::Unauthenticated(m) if m.contains("replaced")),
        "{err}"
    );

    // The pod is gone.
    let api = MockApi::default();
    api.on(
        Method::POST,
        REVIEWS,
        201,
        review_answer(
            "system:serviceaccount:istio-system:meshwork-ztunnel",
            "ztunnel-d",
            "u-4",
        ),
    );
    let err = authenticator(&api).review("gone").await.unwrap_err();
    assert!(
        matches!(&err, NodeAuthError::Unauthenticated(m) if m.contains("no longer exists")),
        "{err}"
    );

    // Wrong audience.
    let api = MockApi::default();
    let mut answer = review_answer(
        "system:serviceaccount:istio-system:meshwork-ztunnel",
        "ztunnel-e",
        "u-5",
    );
    answer["status"]["audiences"] = json!(["https://kubernetes.default.svc"]);
    api.on(Method::POST, REVIEWS, 201, answer);
    let err = authenticator(&api).review("aud").await.unwrap_err();
    assert!(
        matches!(&err, NodeAuthError::Unauthenticated(m) if m.contains("istio-ca")),
        "{err}"
    );

    // API server unreachable / failing: unavailable, not a verdict on the token.
    let api = MockApi::default();
    api.on(
        Method::POST,
        REVIEWS,
        500,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
               "message": "etcd down", "reason": "InternalError"}),
    );
    let err = authenticator(&api).review("x").await.unwrap_err();
    assert!(matches!(err, NodeAuthError::Unavailable(_)), "{err}");
}

mod status {
    use super::*;
    use meshwork_controlplane::source::kube::resources::watched;
    use meshwork_controlplane::source::kube::status::{condition_for, StatusWriter};

    const VS_STATUS: &str =
        "/apis/networking.istio.io/v1/namespaces/production/virtualservices/orders/status";

    fn vs(timeout: &str) -> (std::path::PathBuf, String) {
        (
            "k8s://VirtualService/production/orders".into(),
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "orders", "namespace": "production", "generation": 7},
                   "spec": {"hosts": ["orders"], "http": [{"timeout": timeout,
                            "route": [{"destination": {"host": "orders"}}]}]}})
            .to_string(),
        )
    }

    fn writer(api: &MockApi) -> StatusWriter {
        StatusWriter::new(
            api.client(),
            [watched("VirtualService").unwrap().preferred()],
        )
    }

    #[tokio::test]
    async fn accepted_condition_is_a_server_side_apply_of_the_status_subresource() {
        let api = MockApi::default();
        api.on(
            Method::PATCH,
            VS_STATUS,
            200,
            json!({"apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService", "metadata": {"name": "orders", "namespace": "production"}}),
        );
        let (path, text) = vs("10s");
        let (obj, cond) = condition_for(&path, &text).unwrap();
        let now = "2026-05-06T07:08:09Z".parse().unwrap();
        writer(&api).write(&obj, &cond, now).await.unwrap();

        let reqs = api.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].method, Method::PATCH);
        assert_eq!(reqs[0].path, VS_STATUS);
        assert_eq!(
            reqs[0].content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            reqs[0].query.as_deref(),
            Some("&force=true&fieldManager=meshwork-controlplane")
        );
        assert_eq!(
            reqs[0].body,
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "orders", "namespace": "production"},
                "status": {"conditions": [{"type": "Accepted", "status": "True",
                "reason": "Accepted", "message": "accepted by Meshwork",
                "observedGeneration": 7, "lastTransitionTime": "2026-05-06T07:08:09Z"}]}})
        );
    }

    #[tokio::test]
    async fn invalid_object_gets_the_validation_error_and_a_deleted_one_is_skipped() {
        let api = MockApi::default();
        api.on(
            Method::PATCH,
            VS_STATUS,
            200,
            json!({"apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService", "metadata": {"name": "orders", "namespace": "production"}}),
        );
        let (path, text) = vs("ten seconds");
        let (obj, cond) = condition_for(&path, &text).unwrap();
        writer(&api)
            .write(&obj, &cond, "2026-05-06T07:08:09Z".parse().unwrap())
            .await
            .unwrap();
        let body = &api.requests()[0].body["status"]["conditions"][0];
        assert_eq!(body["status"], "False");
        assert_eq!(body["reason"], "Invalid");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains("timeout"), "{msg}");

        // 404: the object was deleted before its status was written; not an error.
        let gone = MockApi::default();
        writer(&gone)
            .write(&obj, &cond, "2026-05-06T07:08:09Z".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(gone.requests().len(), 1);
    }
}

mod lease {
    use super::*;
    use meshwork_controlplane::source::kube::lease::{
        elect_once, Elector, KubeLease, LeaseApi, LeaseError,
    };
    use std::time::Duration;

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases";

    fn lease(holder: &str, rv: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "meshwork-controlplane", "namespace": "istio-system",
                            "resourceVersion": rv},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                        "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 2}})
    }

    #[tokio::test]
    async fn missing_lease_is_created_holding_it() {
        let api = MockApi::default();
        api.on(Method::POST, LEASES, 201, lease("cp-0", "1"));
        let kl = KubeLease::new(api.client(), "istio-system", "meshwork-controlplane");
        let mut e = Elector::new("cp-0", Duration::from_secs(15));
        assert!(elect_once(&kl, &mut e).await);
        let reqs = api.requests();
        assert_eq!(reqs[0].method, Method::GET);
        assert_eq!(reqs[0].path, format!("{LEASES}/meshwork-controlplane"));
        assert_eq!(reqs[1].method, Method::POST);
        assert_eq!(reqs[1].path, LEASES);
        let spec = &reqs[1].body["spec"];
        assert_eq!(spec["holderIdentity"], "cp-0");
        assert_eq!(spec["leaseDurationSeconds"], 15);
        assert_eq!(spec["leaseTransitions"], 0);
        assert!(spec["renewTime"].is_string() && spec["acquireTime"].is_string());
    }

    #[tokio::test]
    async fn renewal_replaces_with_the_read_resource_version_and_a_conflict_loses() {
        let api = MockApi::default();
        let path = format!("{LEASES}/meshwork-controlplane");
        api.on(Method::GET, &path, 200, lease("cp-0", "41"));
        api.on(Method::PUT, &path, 200, lease("cp-0", "42"));
        let kl = KubeLease::new(api.client(), "istio-system", "meshwork-controlplane");
        let mut e = Elector::new("cp-0", Duration::from_secs(15));
        assert!(elect_once(&kl, &mut e).await);
        let put = &api.requests()[1];
        assert_eq!(put.method, Method::PUT);
        assert_eq!(put.body["metadata"]["resourceVersion"], "41");
        assert_eq!(put.body["spec"]["holderIdentity"], "cp-0");
        assert_eq!(put.body["spec"]["leaseTransitions"], 2);

        // Another replica wrote in between: 409, not leader.
        let api = MockApi::default();
        api.on(Method::GET, &path, 200, lease("", "50"));
        api.on(
            Method::PUT,
            &path,
            409,
            json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"}),
        );
        let kl = KubeLease::new(api.client(), "istio-system", "meshwork-controlplane");
        let mut e = Elector::new("cp-1", Duration::from_secs(15));
        assert!(!elect_once(&kl, &mut e).await);
        let (rec, rv) = kl.get().await.unwrap().unwrap();
        assert_eq!(rv, "50");
        assert!(matches!(
            kl.replace(&rec, &rv).await,
            Err(LeaseError::Conflict(n)) if n == "meshwork-controlplane"
        ));
    }
}
