//! Writes a route's parent statuses: `GET` the route (for the other controllers' entries
//! and our conditions' transition times), then `PATCH …/status` (JSON merge patch).

use ::kube::core::ApiResource;
use ::kube::Client;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tracing::debug;

use super::super::status::{ObjectRef, StatusApis, StatusError};
use super::parents::RouteStatus;

#[derive(Clone)]
pub struct RouteStatusWriter {
    apis: StatusApis,
}

impl RouteStatusWriter {
    /// `resources`: the API resource (version) each kind is watched at.
    pub fn new(client: Client, resources: impl IntoIterator<Item = ApiResource>) -> Self {
        RouteStatusWriter {
            apis: StatusApis::new(client, resources),
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
        self.apis
            .patch_status(&api, obj, &status.patch(&parents, now))
            .await
    }
}
