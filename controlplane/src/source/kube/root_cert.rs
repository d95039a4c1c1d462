//! Publishes the mesh roots as a ConfigMap (`root-cert.pem`) in every namespace, as
//! istiod publishes `istio-ca-root-cert`: proxies mount it to verify the control plane's
//! TLS port (`--control-plane-root`), and the kubelet refreshes the mounted file when the
//! roots change (a rotation), which the proxies read at their next connection.
//!
//! Each round lists the namespaces and server-side applies the ConfigMap where its content
//! differs from what this replica last applied (a new namespace, new roots). Every replica
//! publishes the same content (they share one CA) under one field manager, so they never
//! fight; the round repeats every `every` and at once when the CA changes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// The field manager of every write this publisher makes.
pub const FIELD_MANAGER: &str = "meshwork-controlplane";
/// The key proxies read (Istio's name).
pub const KEY: &str = "root-cert.pem";

#[derive(Debug, thiserror::Error)]
pub enum RootCertError {
    #[error("listing namespaces: {0}")]
    List(kube::Error),
    #[error("applying ConfigMap {namespace}/{name}: {source}")]
    Apply {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

pub struct RootCertPublisher {
    client: Client,
    names: Vec<String>,
    /// namespace → the roots last applied there.
    applied: BTreeMap<String, String>,
}

impl RootCertPublisher {
    /// `names`: the ConfigMaps to publish (e.g. `meshwork-ca-root-cert`, and
    /// `istio-ca-root-cert` when Istio's ztunnel uses this CA).
    pub fn new(client: Client, names: Vec<String>) -> Self {
        RootCertPublisher {
            client,
            names,
            applied: BTreeMap::new(),
        }
    }

    /// One round: every namespace gets `roots_pem` where it does not have it yet. Returns
    /// how many namespaces were written.
    pub async fn publish(&mut self, roots_pem: &str) -> Result<usize, RootCertError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let list = namespaces
            .list_metadata(&ListParams::default())
            .await
            .map_err(RootCertError::List)?;
        let present: Vec<String> = list
            .items
            .into_iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter_map(|ns| ns.metadata.name)
            .collect();
        self.applied.retain(|ns, _| present.contains(ns));
        let mut written = 0;
        for ns in present {
            if self.applied.get(&ns).is_some_and(|r| r == roots_pem) {
                continue;
            }
            for name in &self.names {
                self.apply(&ns, name, roots_pem).await?;
            }
            self.applied.insert(ns, roots_pem.to_string());
            written += 1;
        }
        Ok(written)
    }

    async fn apply(
        &self,
        namespace: &str,
        name: &str,
        roots_pem: &str,
    ) -> Result<(), RootCertError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    FIELD_MANAGER.to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(KEY.to_string(), roots_pem.to_string())])),
            ..Default::default()
        };
        let mut value = serde_json::to_value(&cm).expect("a ConfigMap serializes");
        value["apiVersion"] = "v1".into();
        value["kind"] = "ConfigMap".into();
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(value),
        )
        .await
        .map(|_| ())
        .map_err(|source| RootCertError::Apply {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        })
    }

    /// Publishes `roots()` every `every`, and at once when `changed` fires (the CA was
    /// replaced). Failures are logged and retried next round.
    pub async fn run(
        mut self,
        roots: impl Fn() -> String + Send,
        mut changed: watch::Receiver<u64>,
        every: Duration,
    ) {
        loop {
            match self.publish(&roots()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(namespaces = n, configmaps = ?self.names, "published the mesh roots")
                }
                Err(e) => tracing::warn!(error = %e, "cannot publish the mesh roots; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = changed.changed() => if r.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::source::kube::test_api::MockApi;

    fn api_with(namespaces: &[&str]) -> MockApi {
        let api = MockApi::default();
        let items: Vec<_> = namespaces
            .iter()
            .map(|n| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": n}}))
            .collect();
        api.on(
            Method::GET,
            "/api/v1/namespaces",
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                   "metadata": {}, "items": items}),
        );
        for n in namespaces {
            api.on(
                Method::PATCH,
                &format!("/api/v1/namespaces/{n}/configmaps/meshwork-ca-root-cert"),
                200,
                serde_json::Value::Null,
            );
        }
        api
    }

    #[tokio::test]
    async fn every_namespace_gets_the_roots_once_and_again_when_they_change() {
        let api = api_with(&["istio-system", "shop"]);
        let mut p = RootCertPublisher::new(api.client(), vec!["meshwork-ca-root-cert".into()]);
        assert_eq!(p.publish("ROOT-A").await.unwrap(), 2);
        let patches: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == Method::PATCH)
            .collect();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[0].content_type, "application/apply-patch+yaml");
        assert!(patches[0]
            .query
            .contains("fieldManager=meshwork-controlplane"));
        assert!(patches[0].query.contains("force=true"));
        assert_eq!(patches[0].body["data"][KEY], "ROOT-A");
        assert_eq!(patches[0].body["kind"], "ConfigMap");

        api.clear();
        assert_eq!(p.publish("ROOT-A").await.unwrap(), 0, "nothing new");
        assert_eq!(p.publish("ROOT-A\nROOT-B").await.unwrap(), 2, "rotation");
    }

    #[tokio::test]
    async fn a_failed_write_names_the_configmap_and_is_retried() {
        let api = api_with(&["shop"]);
        api.on(
            Method::PATCH,
            "/api/v1/namespaces/shop/configmaps/meshwork-ca-root-cert",
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "Forbidden", "code": 403, "message": "forbidden"}),
        );
        let mut p = RootCertPublisher::new(api.client(), vec!["meshwork-ca-root-cert".into()]);
        let e = p.publish("ROOT").await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("applying ConfigMap shop/meshwork-ca-root-cert:"),
            "{e}"
        );
        api.on(
            Method::PATCH,
            "/api/v1/namespaces/shop/configmaps/meshwork-ca-root-cert",
            200,
            serde_json::Value::Null,
        );
        assert_eq!(p.publish("ROOT").await.unwrap(), 1);
    }
}
