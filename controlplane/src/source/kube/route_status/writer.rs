//! Writes a route's parent statuses: `GET` the route (for the other controllers' entries
//! and our conditions' transition times), then `PATCH …/status` (JSON merge patch).

use std::collections::BTreeMap;

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::Client;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tracing::debug;

use super::super::status::{ObjectRef, StatusError, FIELD_MANAGER};
use super::parents::RouteStatus;

#[derive(Clone)]
pub struct RouteStatusWriter {
    client: Client,
    resources: BTreeMap<String, ApiResource>,
}

impl RouteStatusWriter {
    /// `resources`: the API resource (version) each kind is watched at.
    pub fn new(client: Client, resources: impl IntoIterator<Item = ApiResource>) -> Self {
        RouteStatusWriter {
            client,
            resources: resources.into_iter().map(|r| (r.kind.clone(), r)).collect(),
        }
    }

    /// Writes `status` on the route `obj`. A route deleted meanwhile (404) is not an error.
    pub async fn write(
        &self,
        obj: &ObjectRef,
        status: &RouteStatus,
        now: Timestamp,
    ) -> Result<(), StatusError> {
        let ar = self
            .resources
            .get(&obj.kind)
            .ok_or_else(|| StatusError::UnknownKind(obj.kind.clone()))?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &obj.namespace, ar);
        let failed = |source| StatusError::Patch {
            kind: obj.kind.clone(),
            namespace: obj.namespace.clone(),
            name: obj.name.clone(),
            source,
        };
        let Some(current) = api.get_opt(&obj.name).await.map_err(failed)? else {
            debug!(kind = %obj.kind, namespace = %obj.namespace, name = %obj.name, "route gone before its status was written");
            return Ok(());
        };
        let parents = current
            .data
            .get("status")
            .and_then(|s| s.get("parents"))
            .cloned()
            .unwrap_or(Value::Null);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api
            .patch_status(
                &obj.name,
                &params,
                &Patch::Merge(status.patch(&parents, now)),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(failed(source)),
        }
    }
}
