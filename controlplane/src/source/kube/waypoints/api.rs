//! The controller's writes: server-side apply of the rendered objects and the Gateway's
//! status (merge patch of the status subresource).

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::Client;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tracing::debug;

use super::error::WaypointError;
use super::gateway::WaypointGateway;
use super::status::GatewayStatus;
use super::template::api_resource;
use crate::source::kube::status::apply_body;

/// Field manager of the applied objects and of the Gateway status.
pub const FIELD_MANAGER: &str = "meshwork-waypoint-controller";

/// Writes to the API server.
#[derive(Clone)]
pub struct WaypointApi {
    client: Client,
}

impl WaypointApi {
    pub fn new(client: Client) -> Self {
        WaypointApi { client }
    }

    /// Server-side applies one rendered object (forcing ownership of its fields) and
    /// returns the object as the API server stored it.
    pub async fn apply(&self, obj: &Value) -> Result<Value, WaypointError> {
        let s = |f: &str| obj["metadata"][f].as_str().unwrap_or_default().to_string();
        let (namespace, name) = (s("namespace"), s("name"));
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let ar = api_resource(obj["apiVersion"].as_str().unwrap_or_default(), &kind).ok_or_else(
            || WaypointError::Template {
                source_name: format!("{kind} {namespace}/{name}"),
                reason: "kind not allowed".into(),
            },
        )?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &namespace, &ar);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = api
            .patch(&name, &params, &Patch::Apply(obj))
            .await
            .map_err(|source| WaypointError::Apply {
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                source: Box::new(source),
            })?;
        debug!(%kind, %namespace, %name, "waypoint object applied");
        serde_json::to_value(applied).map_err(|e| WaypointError::Template {
            source_name: format!("{kind} {namespace}/{name}"),
            reason: format!("answer is not JSON: {e}"),
        })
    }

    /// Writes `status` on `gw`. A Gateway deleted meanwhile (404) is not an error.
    pub async fn write_status(
        &self,
        gw: &WaypointGateway,
        status: &GatewayStatus,
        now: Timestamp,
    ) -> Result<(), WaypointError> {
        let version = gw.api_version.rsplit('/').next().unwrap_or("v1");
        let ar = ApiResource {
            group: "gateway.networking.k8s.io".into(),
            version: version.into(),
            api_version: gw.api_version.clone(),
            kind: "Gateway".into(),
            plural: "gateways".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &gw.namespace, &ar);
        // Server-side apply of our conditions (Gateway API's `status.conditions` is a list
        // map keyed by `type`): conditions other controllers own stay.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = apply_body(
            &gw.api_version,
            "Gateway",
            Some(&gw.namespace),
            &gw.name,
            status.patch(now)["status"].take(),
        );
        match api
            .patch_status(&gw.name, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(s)) if s.code == 404 => {
                debug!(namespace = %gw.namespace, name = %gw.name, "Gateway gone before its status was written");
                Ok(())
            }
            Err(source) => Err(WaypointError::Status {
                namespace: gw.namespace.clone(),
                name: gw.name.clone(),
                source: Box::new(source),
            }),
        }
    }
}
