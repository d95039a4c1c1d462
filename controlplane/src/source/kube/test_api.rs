//! A recorded mock API server for unit tests (this crate's, and others' with the
//! `test-util` feature): `kube::Client` over a `tower::service_fn`
//! answering canned JSON by (method, path) and recording every request. A route whose
//! body is `null` echoes the request body (what server-side apply answers).

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

type Route = (Method, String, u16, Value);

#[derive(Clone, Default)]
pub struct MockApi {
    /// (method, path) → (status, body); unmatched requests get 404.
    routes: Arc<Mutex<Vec<Route>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl MockApi {
    pub fn on(&self, method: Method, path: &str, status: u16, body: Value) {
        let mut r = self.routes.lock().unwrap();
        r.retain(|(m, p, _, _)| !(*m == method && p == path));
        r.push((method, path.to_string(), status, body));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }

    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                me.requests.lock().unwrap().push(Recorded {
                    method: parts.method.clone(),
                    path: path.clone(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default(),
                    body: body.clone(),
                });
                let found = me
                    .routes
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(m, p, _, _)| *m == parts.method && *p == path)
                    .map(|(_, _, s, b)| (*s, b.clone()));
                // An apply answers the object it was given (plus a cluster IP for Services).
                let (status, answer) = match found {
                    Some((s, b)) if !b.is_null() => (s, b),
                    Some((s, _)) => (s, body),
                    None => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "NotFound", "code": 404,
                               "message": format!("{path} not found")}),
                    ),
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(StatusCode::from_u16(status).unwrap())
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(svc, "default")
    }
}
