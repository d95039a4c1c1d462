//! The `istio-waypoint` GatewayClass, provided the way istiod provides it: created when
//! missing (controller `istio.io/mesh-controller`), and marked `Accepted` so
//! `kubectl get gatewayclass` shows the class as handled. A class of that name owned by
//! another controller is left alone (`spec.controllerName` is immutable); without the
//! Gateway API CRDs nothing is created and nothing is retried until the next resync.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::Client;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use super::api::FIELD_MANAGER;
use super::controller::RESYNC;
use super::gateway::WAYPOINT_CLASS;
use crate::source::kube::leader_writes::{self, PendingWrites};
use crate::source::kube::route_status::parents::MESH_CONTROLLER;
use crate::source::kube::status::apply_body;
use crate::source::FileEvent;

/// Why the class could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error("reading GatewayClass {WAYPOINT_CLASS}: {0}")]
    Get(#[source] Box<::kube::Error>),
    #[error("creating GatewayClass {WAYPOINT_CLASS}: {0}")]
    Create(#[source] Box<::kube::Error>),
    #[error("writing status of GatewayClass {WAYPOINT_CLASS}: {0}")]
    Status(#[source] Box<::kube::Error>),
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassOutcome {
    /// Created, or found ours; `Accepted` written (false: it was already current).
    Ours { created: bool, status_written: bool },
    /// The class exists with another controller.
    Foreign(String),
    /// The GatewayClass resource does not exist (Gateway API CRDs not installed).
    NoCrd,
}

fn resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "GatewayClass".into(),
        plural: "gatewayclasses".into(),
    }
}

/// The class as created.
pub fn desired() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": WAYPOINT_CLASS},
        "spec": {
            "controllerName": MESH_CONTROLLER,
            "description": "Waypoints of the ambient mesh (Meshwork)",
        },
    })
}

/// True when `class` already says `Accepted: True` for its current generation.
fn accepted_now(class: &Value) -> bool {
    let generation = class["metadata"]["generation"].as_i64();
    class["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"] == "Accepted"
                && c["status"] == "True"
                && c["observedGeneration"].as_i64() == generation
        })
}

/// The `{"status": …}` of the class at `now` (applied server-side).
pub fn status_patch(class: &Value, now: Timestamp) -> Value {
    let mut cond = json!({
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "Handled by Meshwork",
        "lastTransitionTime": now.to_string(),
    });
    if let Some(g) = class["metadata"]["generation"].as_i64() {
        cond["observedGeneration"] = json!(g);
    }
    json!({"status": {"conditions": [cond]}})
}

fn is_404(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 404)
}

/// Creates the class when missing and writes its `Accepted` condition when it is ours.
pub async fn ensure(client: &Client, now: Timestamp) -> Result<ClassOutcome, ClassError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource());
    let found = match api.get(WAYPOINT_CLASS).await {
        Ok(o) => Some(o),
        Err(e) if is_404(&e) => None,
        Err(e) => return Err(ClassError::Get(Box::new(e))),
    };
    let (class, created) = match found {
        Some(o) => (serde_json::to_value(o).unwrap_or_default(), false),
        None => {
            let obj: DynamicObject =
                serde_json::from_value(desired()).expect("the class is a valid object");
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&params, &obj).await {
                Ok(o) => (serde_json::to_value(o).unwrap_or_default(), true),
                Err(e) if is_404(&e) => return Ok(ClassOutcome::NoCrd),
                Err(e) => return Err(ClassError::Create(Box::new(e))),
            }
        }
    };
    let controller = class["spec"]["controllerName"].as_str().unwrap_or_default();
    if controller != MESH_CONTROLLER {
        return Ok(ClassOutcome::Foreign(controller.to_string()));
    }
    if accepted_now(&class) {
        return Ok(ClassOutcome::Ours {
            created,
            status_written: false,
        });
    }
    // Server-side apply of our condition only (a list map keyed by `type`).
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let ar = resource();
    let body = apply_body(
        &ar.api_version,
        &ar.kind,
        None,
        WAYPOINT_CLASS,
        status_patch(&class, now)["status"].take(),
    );
    match api
        .patch_status(WAYPOINT_CLASS, &params, &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(ClassOutcome::Ours {
            created,
            status_written: true,
        }),
        Err(e) => Err(ClassError::Status(Box::new(e))),
    }
}

/// [`ensure`] as a leader-only writer: on leadership gains and every [`RESYNC`] (which
/// restores a deleted class), retried after a failure.
struct ClassWrites {
    client: Client,
    done: bool,
}

impl PendingWrites for ClassWrites {
    fn observe(&mut self, _batch: &[FileEvent]) {}

    fn reset_written(&mut self) {
        self.done = false;
    }

    fn write_pending(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            if self.done {
                return true;
            }
            match ensure(&self.client, Timestamp::now()).await {
                Ok(outcome) => {
                    match &outcome {
                        ClassOutcome::Ours { created: true, .. } => {
                            info!(class = WAYPOINT_CLASS, "GatewayClass created")
                        }
                        ClassOutcome::Ours { .. } => {}
                        ClassOutcome::Foreign(c) => warn!(
                            class = WAYPOINT_CLASS,
                            controller = %c,
                            "GatewayClass belongs to another controller; left as it is"
                        ),
                        ClassOutcome::NoCrd => info!(
                            class = WAYPOINT_CLASS,
                            "Gateway API CRDs not installed; no GatewayClass created"
                        ),
                    }
                    self.done = true;
                    true
                }
                Err(e) => {
                    warn!(error = %e, "GatewayClass not ensured; retrying");
                    false
                }
            }
        })
    }

    fn resync_every(&self) -> Option<Duration> {
        Some(RESYNC)
    }
}

/// Ensures the class while `leader` is true, until the leader channel is dropped.
pub async fn run_class(client: Client, leader: watch::Receiver<bool>) {
    // No watch: one empty batch starts the first write (when already leading), then
    // leadership gains and resyncs.
    let (keep, events) = tokio::sync::mpsc::channel(1);
    let _ = keep.try_send(Vec::new());
    let writes = ClassWrites {
        client,
        done: false,
    };
    leader_writes::run(writes, events, leader).await
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::source::kube::test_api::MockApi;

    const CLASSES: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses";
    const CLASS: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses/istio-waypoint";
    const STATUS: &str = "/apis/gateway.networking.k8s.io/v1/gatewayclasses/istio-waypoint/status";

    fn stored(controller: &str, generation: i64, status: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "istio-waypoint", "generation": generation},
               "spec": {"controllerName": controller}, "status": status})
    }

    /// No class yet: the create and the status patch succeed.
    fn api_without_the_class() -> MockApi {
        let api = MockApi::default();
        api.on(
            Method::POST,
            CLASSES,
            201,
            stored(MESH_CONTROLLER, 1, json!({})),
        );
        api.on(
            Method::PATCH,
            STATUS,
            200,
            stored(MESH_CONTROLLER, 1, json!({})),
        );
        api
    }

    fn server_error() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "InternalError", "code": 500, "message": "etcd unavailable"})
    }

    fn calls(api: &MockApi) -> Vec<(Method, String)> {
        api.requests()
            .into_iter()
            .map(|r| (r.method, r.path))
            .collect()
    }

    fn now() -> Timestamp {
        "2026-11-26T00:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn a_missing_class_is_created_for_the_mesh_controller_and_accepted() {
        let api = api_without_the_class();
        let out = ensure(&api.client(), now()).await.unwrap();
        assert_eq!(
            out,
            ClassOutcome::Ours {
                created: true,
                status_written: true
            }
        );
        assert_eq!(
            calls(&api),
            [
                (Method::GET, CLASS.to_string()),
                (Method::POST, CLASSES.to_string()),
                (Method::PATCH, STATUS.to_string())
            ]
        );
        let reqs = api.requests();
        assert_eq!(reqs[1].body["spec"]["controllerName"], MESH_CONTROLLER);
        assert_eq!(reqs[1].body["metadata"]["name"], "istio-waypoint");
        assert!(reqs[1]
            .query
            .contains("fieldManager=meshwork-waypoint-controller"));
        assert_eq!(reqs[2].content_type, "application/apply-patch+yaml");
        assert!(reqs[2].query.contains("force=true"), "{}", reqs[2].query);
        assert_eq!(reqs[2].body["kind"], "GatewayClass");
        let c = &reqs[2].body["status"]["conditions"][0];
        assert_eq!(
            (
                &c["type"],
                &c["status"],
                &c["reason"],
                &c["observedGeneration"]
            ),
            (
                &json!("Accepted"),
                &json!("True"),
                &json!("Accepted"),
                &json!(1)
            )
        );
        assert_eq!(c["lastTransitionTime"], "2026-11-26T00:00:00Z");
    }

    #[tokio::test]
    async fn an_accepted_class_is_not_written_again_until_its_generation_moves() {
        let accepted = |g: i64| {
            json!({"conditions": [{"type": "Accepted", "status": "True",
                                   "reason": "Accepted", "observedGeneration": g}]})
        };
        let api = MockApi::default();
        api.on(
            Method::GET,
            CLASS,
            200,
            stored(MESH_CONTROLLER, 3, accepted(3)),
        );
        let out = ensure(&api.client(), now()).await.unwrap();
        assert_eq!(
            out,
            ClassOutcome::Ours {
                created: false,
                status_written: false
            }
        );
        assert_eq!(calls(&api), [(Method::GET, CLASS.to_string())]);

        // Edited since (generation 4): accepted again for 4.
        api.clear();
        api.on(
            Method::GET,
            CLASS,
            200,
            stored(MESH_CONTROLLER, 4, accepted(3)),
        );
        api.on(
            Method::PATCH,
            STATUS,
            200,
            stored(MESH_CONTROLLER, 4, accepted(4)),
        );
        ensure(&api.client(), now()).await.unwrap();
        let reqs = api.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[1].body["status"]["conditions"][0]["observedGeneration"],
            4
        );
    }

    #[tokio::test]
    async fn a_class_of_another_controller_is_left_alone() {
        let api = MockApi::default();
        api.on(
            Method::GET,
            CLASS,
            200,
            stored("example.com/other", 1, json!({})),
        );
        let out = ensure(&api.client(), now()).await.unwrap();
        assert_eq!(out, ClassOutcome::Foreign("example.com/other".into()));
        assert_eq!(calls(&api), [(Method::GET, CLASS.to_string())]);
    }

    #[tokio::test]
    async fn without_the_gateway_api_crds_nothing_is_created() {
        // Both the read and the create answer 404 (unknown resource).
        let api = MockApi::default();
        let out = ensure(&api.client(), now()).await.unwrap();
        assert_eq!(out, ClassOutcome::NoCrd);
        assert_eq!(calls(&api).len(), 2);
    }

    #[tokio::test]
    async fn a_failed_read_is_an_error_naming_the_class() {
        let api = MockApi::default();
        api.on(Method::GET, CLASS, 500, server_error());
        let e = ensure(&api.client(), now()).await.unwrap_err();
        assert!(matches!(e, ClassError::Get(_)));
        assert!(
            e.to_string()
                .starts_with("reading GatewayClass istio-waypoint: "),
            "{e}"
        );
    }

    /// Waits (bounded, paused clock) until `n` requests were recorded.
    async fn wait_for(api: &MockApi, n: usize) -> usize {
        for _ in 0..100 {
            if api.requests().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        api.requests().len()
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_leading_from_the_start_writes_at_once() {
        let api = api_without_the_class();
        let (leader_tx, leader_rx) = watch::channel(true);
        let task = tokio::spawn(run_class(api.client(), leader_rx));
        assert_eq!(wait_for(&api, 3).await, 3);
        drop(leader_tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_leader_writes_at_once_on_gaining_it_and_again_after_a_failure() {
        let api = MockApi::default();
        api.on(Method::GET, CLASS, 500, server_error());
        let (leader_tx, leader_rx) = watch::channel(false);
        let task = tokio::spawn(run_class(api.client(), leader_rx));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(api.requests().is_empty(), "a follower wrote");

        leader_tx.send(true).unwrap();
        assert_eq!(wait_for(&api, 1).await, 1);
        // The failed read is retried after RETRY; then the class is current and the loop
        // stays quiet until the resync.
        api.on(
            Method::GET,
            CLASS,
            200,
            stored(
                MESH_CONTROLLER,
                1,
                json!({"conditions": [{"type": "Accepted", "status": "True",
                                       "observedGeneration": 1}]}),
            ),
        );
        tokio::time::sleep(leader_writes::RETRY + Duration::from_millis(100)).await;
        assert_eq!(wait_for(&api, 2).await, 2);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(api.requests().len(), 2);
        tokio::time::sleep(RESYNC).await;
        assert_eq!(wait_for(&api, 3).await, 3);
        drop(leader_tx);
        task.await.unwrap();
    }
}
