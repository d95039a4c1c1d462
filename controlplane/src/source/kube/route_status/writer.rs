//! Writes a route's parent statuses with optimistic concurrency: `GET` the route (for the
//! other controllers' entries and our conditions' transition times), then `PATCH
//! …/status` (JSON merge patch) carrying the `resourceVersion` read as a precondition.
//! When another controller wrote in between, the API server answers `409 Conflict` and
//! the write starts over from a fresh read, so its entries are never lost.
//!
//! Not server-side apply: Gateway API's `status.parents` has no list-map keys (it is an
//! atomic list), so an apply by two managers would replace, not merge, the entries.

use std::future::Future;
use std::pin::Pin;

use ::kube::api::{Patch, PatchParams};
use ::kube::core::ApiResource;
use ::kube::Client;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tracing::debug;

use super::super::status::{ObjectRef, StatusApis, StatusError, WriteStatus, FIELD_MANAGER};
use super::super::watch::Served;
use super::parents::RouteStatus;

/// Attempts of one write when others keep writing in between.
pub const ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct RouteStatusWriter {
    apis: StatusApis,
}

impl WriteStatus<RouteStatus> for RouteStatusWriter {
    fn write<'a>(
        &'a self,
        obj: &'a ObjectRef,
        status: &'a RouteStatus,
        now: Timestamp,
    ) -> Pin<Box<dyn Future<Output = Result<(), StatusError>> + Send + 'a>> {
        Box::pin(RouteStatusWriter::write(self, obj, status, now))
    }
}

impl RouteStatusWriter {
    /// `resources`: the API resource (version) each kind is watched at.
    pub fn new(client: Client, resources: impl IntoIterator<Item = ApiResource>) -> Self {
        RouteStatusWriter {
            apis: StatusApis::new(client, resources),
        }
    }

    /// The versions are those the source watches now.
    pub fn with_served(client: Client, served: Served) -> Self {
        RouteStatusWriter {
            apis: StatusApis::with_served(client, served),
        }
    }

    /// Writes `status` on the route `obj`. A route deleted meanwhile (404) is not an error.
    pub async fn write(
        &self,
        obj: &ObjectRef,
        status: &RouteStatus,
        now: Timestamp,
    ) -> Result<(), StatusError> {
        let api = self.apis.api(obj)?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = api
                .get_opt(&obj.name)
                .await
                .map_err(|e| StatusApis::failed(obj, e))?;
            let Some(current) = current else {
                debug!(kind = %obj.kind, namespace = %obj.namespace, name = %obj.name, "route gone before its status was written");
                return Ok(());
            };
            let parents = current
                .data
                .get("status")
                .and_then(|s| s.get("parents"))
                .cloned()
                .unwrap_or(Value::Null);
            let mut patch = status.patch(&parents, now);
            patch["metadata"] = serde_json::json!({
                "resourceVersion": current.metadata.resource_version,
            });
            match api
                .patch_status(&obj.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(::kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(::kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => {
                    debug!(kind = %obj.kind, namespace = %obj.namespace, name = %obj.name, attempt, "route changed since read; reading again");
                }
                Err(e) => return Err(StatusApis::failed(obj, e)),
            }
        }
    }
}
