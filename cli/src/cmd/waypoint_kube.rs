//! Kubernetes mode: the waypoint Gateway (and namespace label) server-side applied with
//! the current kubeconfig, field manager `meshwork`. The control plane's waypoint
//! deployment controller then creates the waypoint's Deployment and Service.

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use serde_json::Value;
use thiserror::Error;

use super::waypoint_manifest::{self as manifest, LABEL_WAYPOINT_FOR};

/// Field manager of what the CLI applies.
pub const FIELD_MANAGER: &str = "meshwork";

#[derive(Debug, Error)]
pub enum KubeModeError {
    #[error("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(String),
    #[error("namespace {0} not found")]
    NoNamespace(String),
    #[error("no waypoint Gateway {namespace}/{name}")]
    NotFound { namespace: String, name: String },
    #[error("waypoint {namespace}/{name} not programmed after {waited:?}: {last}")]
    NotProgrammed {
        namespace: String,
        name: String,
        waited: std::time::Duration,
        last: String,
    },
    /// The message carries the cause (on one line), so it is not a `#[source]`.
    #[error("{what}: {}", api_message(.error))]
    Api {
        what: String,
        error: Box<kube::Error>,
    },
}

/// The API server's own message, or the transport failure, on one line.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => {
            let mut msg = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                msg = format!("{msg}: {c}");
                cause = c.source();
            }
            format!("cannot reach the Kubernetes API server: {}", tidy(&msg))
        }
    }
}

/// One line, without kube's `ServiceError` prefix and hyper's repeated segments.
fn tidy(msg: &str) -> String {
    let flat = msg.replace('\n', " ");
    let mut parts: Vec<&str> = Vec::new();
    for p in flat.split(": ") {
        if p != "ServiceError" && parts.last() != Some(&p) {
            parts.push(p);
        }
    }
    parts.join(": ")
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> KubeModeError {
    let what = what.into();
    move |error| KubeModeError::Api {
        what,
        error: Box::new(error),
    }
}

/// The client of the current kubeconfig (or in-cluster configuration).
pub async fn client() -> Result<Client, KubeModeError> {
    Client::try_default()
        .await
        .map_err(|e| KubeModeError::Config(e.to_string()))
}

fn gateways() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: manifest::GATEWAY_API_VERSION.into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    }
}

fn namespaces() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Namespace".into(),
        plural: "namespaces".into(),
    }
}

/// Server-side applies `objects` (Gateway, and Namespace labels) after checking the
/// namespace exists; returns what the API server stored.
pub async fn apply(
    client: &Client,
    namespace: &str,
    objects: &[Value],
) -> Result<Vec<Value>, KubeModeError> {
    let ns_api: Api<DynamicObject> = Api::all_with(client.clone(), &namespaces());
    ns_api
        .get_opt(namespace)
        .await
        .map_err(api_err(format!("reading namespace {namespace}")))?
        .ok_or_else(|| KubeModeError::NoNamespace(namespace.to_string()))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut out = Vec::new();
    for obj in objects {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> = if kind == "Namespace" {
            ns_api.clone()
        } else {
            Api::namespaced_with(client.clone(), namespace, &gateways())
        };
        let applied = api
            .patch(name, &params, &Patch::Apply(obj))
            .await
            .map_err(api_err(format!("applying {kind} {namespace}/{name}")))?;
        out.push(serde_json::to_value(applied).unwrap_or(Value::Null));
    }
    Ok(out)
}

/// A waypoint Gateway in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "for")]
    pub for_: String,
    /// `Programmed` condition status (`True`, `False`, or empty when not written yet).
    pub programmed: String,
    pub addresses: Vec<String>,
}

/// The waypoint Gateways (of `namespace`, else of every namespace).
pub async fn list(client: &Client, namespace: Option<&str>) -> Result<Vec<Listed>, KubeModeError> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &gateways()),
        None => Api::all_with(client.clone(), &gateways()),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing Gateways"))?;
    let mut out: Vec<Listed> = list
        .items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter(|v| v["spec"]["gatewayClassName"] == manifest::WAYPOINT_CLASS)
        .map(|v| {
            let s = |p: &Value| p.as_str().unwrap_or_default().to_string();
            let programmed = v["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Programmed"))
                .map(|c| s(&c["status"]))
                .unwrap_or_default();
            Listed {
                namespace: s(&v["metadata"]["namespace"]),
                name: s(&v["metadata"]["name"]),
                for_: v["metadata"]["labels"][LABEL_WAYPOINT_FOR]
                    .as_str()
                    .unwrap_or("service")
                    .to_string(),
                programmed,
                addresses: v["status"]["addresses"]
                    .as_array()
                    .map(|a| a.iter().map(|a| s(&a["value"])).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// The Gateway's `Programmed` condition: (status, "reason: message").
fn programmed(v: &Value) -> Option<(String, String)> {
    let c = v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Programmed")?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), format!("{}: {}", s("reason"), s("message"))))
}

/// Polls the Gateway (every second, up to `timeout`) until the control plane reports it
/// `Programmed=True`; returns its addresses.
pub async fn wait_programmed(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<Vec<String>, KubeModeError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &gateways());
    let start = tokio::time::Instant::now();
    let mut last = "no status written yet (is the control plane running?)".to_string();
    loop {
        if let Some(gw) = api
            .get_opt(name)
            .await
            .map_err(api_err(format!("reading Gateway {namespace}/{name}")))?
        {
            let v = serde_json::to_value(gw).unwrap_or(Value::Null);
            match programmed(&v) {
                Some((status, _)) if status == "True" => {
                    return Ok(v["status"]["addresses"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|a| a["value"].as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default())
                }
                Some((status, why)) => last = format!("Programmed={status} {why}"),
                None => {}
            }
        }
        if start.elapsed() >= timeout {
            return Err(KubeModeError::NotProgrammed {
                namespace: namespace.into(),
                name: name.into(),
                waited: timeout,
                last,
            });
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Deletes the waypoint Gateway (garbage collection deletes its Deployment and Service).
pub async fn delete(client: &Client, namespace: &str, name: &str) -> Result<(), KubeModeError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &gateways());
    let gw = api
        .get_opt(name)
        .await
        .map_err(api_err(format!("reading Gateway {namespace}/{name}")))?;
    let is_waypoint = gw
        .and_then(|g| serde_json::to_value(g).ok())
        .is_some_and(|v| v["spec"]["gatewayClassName"] == manifest::WAYPOINT_CLASS);
    if !is_waypoint {
        return Err(KubeModeError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        });
    }
    api.delete(name, &DeleteParams::foreground())
        .await
        .map_err(api_err(format!("deleting Gateway {namespace}/{name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use meshwork_controlplane::source::kube::test_api::MockApi as Mock;
    use serde_json::{json, Value};

    use std::time::Duration;

    use super::*;
    use crate::cmd::waypoint_manifest::{gateway, namespace_enrollment, WaypointFor};

    const NS: &str = "/api/v1/namespaces/shop";
    const GW: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint";

    #[test]
    fn transport_errors_are_tidied() {
        assert_eq!(
            tidy("ServiceError: client error (Connect): client error (Connect): tcp connect error: Connection refused (os error 111)"),
            "client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
    }

    #[tokio::test]
    async fn apply_checks_the_namespace_then_server_side_applies() {
        let m = Mock::default();
        m.on(
            Method::GET,
            NS,
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        );
        m.on(Method::PATCH, GW, 200, Value::Null);
        m.on(Method::PATCH, NS, 200, Value::Null);
        let objs = [
            gateway("shop", "waypoint", WaypointFor::Service),
            namespace_enrollment("shop", "waypoint"),
        ];
        let applied = apply(&m.client(), "shop", &objs).await.unwrap();
        assert_eq!(applied.len(), 2);
        let seen = m.requests();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            (seen[0].method.clone(), seen[0].path.as_str()),
            (Method::GET, NS)
        );
        for (i, path) in [(1, GW), (2, NS)] {
            let r = &seen[i];
            assert_eq!((&r.method, r.path.as_str()), (&Method::PATCH, path));
            assert_eq!(r.content_type, "application/apply-patch+yaml");
            assert!(
                r.query.contains("fieldManager=meshwork") && r.query.contains("force=true"),
                "{}",
                r.query
            );
            assert_eq!(r.body, objs[i - 1]);
        }
    }

    #[tokio::test]
    async fn missing_namespace_and_api_errors_are_one_clear_line() {
        let m = Mock::default();
        let e = apply(
            &m.client(),
            "shop",
            &[gateway("shop", "waypoint", WaypointFor::Service)],
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "namespace shop not found");
        assert_eq!(m.requests().len(), 1, "nothing applied");

        let m = Mock::default();
        m.on(
            Method::GET,
            NS,
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        );
        m.on(Method::PATCH, GW, 403, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "Forbidden", "code": 403, "message": "gateways is forbidden: User \"dev\" cannot patch"}));
        let e = apply(
            &m.client(),
            "shop",
            &[gateway("shop", "waypoint", WaypointFor::Service)],
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(e, "applying Gateway shop/waypoint: gateways is forbidden: User \"dev\" cannot patch (403)");
    }

    #[tokio::test]
    async fn wait_returns_the_address_once_programmed_or_the_last_reason() {
        let gw = |status: &str, reason: &str| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                   "metadata": {"name": "waypoint", "namespace": "shop"},
                   "spec": {"gatewayClassName": "istio-waypoint"},
                   "status": {"conditions": [{"type": "Programmed", "status": status,
                                              "reason": reason, "message": "m"}],
                              "addresses": [{"type": "IPAddress", "value": "10.96.0.9"}]}})
        };
        let m = Mock::default();
        m.on(Method::GET, GW, 200, gw("True", "Programmed"));
        let a = wait_programmed(&m.client(), "shop", "waypoint", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(a, ["10.96.0.9"]);

        let m = Mock::default();
        m.on(Method::GET, GW, 200, gw("False", "NoResources"));
        // Real time (the cli's tokio has no test-util): a 2 s wait polls about 3 times.
        let e = wait_programmed(&m.client(), "shop", "waypoint", Duration::from_secs(2))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "waypoint shop/waypoint not programmed after 2s: Programmed=False NoResources: m"
        );
        let polls = m.requests().len();
        assert!((2..=4).contains(&polls), "polled every second: {polls}");
    }

    #[tokio::test]
    async fn list_shows_waypoints_with_their_status_and_delete_needs_one() {
        let m = Mock::default();
        m.on(Method::GET, "/apis/gateway.networking.k8s.io/v1/gateways", 200, json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayList", "metadata": {},
            "items": [
                {"metadata": {"name": "waypoint", "namespace": "shop", "labels": {"istio.io/waypoint-for": "all"}},
                 "spec": {"gatewayClassName": "istio-waypoint"},
                 "status": {"conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "True"}],
                            "addresses": [{"type": "IPAddress", "value": "10.96.0.9"}]}},
                {"metadata": {"name": "ingress", "namespace": "shop"}, "spec": {"gatewayClassName": "istio"}}
            ]}));
        let l = list(&m.client(), None).await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].for_.as_str(), l[0].programmed.as_str()),
            ("all", "True")
        );
        assert_eq!(l[0].addresses, ["10.96.0.9"]);

        let e = delete(&m.client(), "shop", "waypoint")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "no waypoint Gateway shop/waypoint");
        m.on(Method::GET, GW, 200, json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "shop"}, "spec": {"gatewayClassName": "istio-waypoint"}}));
        m.on(
            Method::DELETE,
            GW,
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
        );
        delete(&m.client(), "shop", "waypoint").await.unwrap();
        let seen = m.requests();
        let last = seen.last().unwrap();
        assert_eq!(
            (last.method.clone(), last.path.as_str()),
            (Method::DELETE, GW)
        );
        assert_eq!(last.body["propagationPolicy"], "Foreground");
    }
}
