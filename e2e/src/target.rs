//! What a scenario needs from a mesh under test. Implemented by the namespace mini-cluster
//! ([`crate::NetnsMesh`]); a Kubernetes implementation can run the same scenarios.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::pcap::Capture;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {scenario}: {reason}")]
    Failed {
        scenario: &'static str,
        reason: String,
    },
    #[error("mesh target: {0}")]
    Target(String),
}

impl From<crate::HarnessError> for ScenarioError {
    fn from(e: crate::HarnessError) -> Self {
        Self::Target(e.to_string())
    }
}

impl From<crate::LabError> for ScenarioError {
    fn from(e: crate::LabError) -> Self {
        Self::Target(e.to_string())
    }
}

/// Summary printed by `meshwork-testapp get` (same field names).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct HttpSummary {
    pub total: u64,
    #[serde(default)]
    pub status: BTreeMap<String, u64>,
    #[serde(default)]
    pub versions: BTreeMap<String, u64>,
    #[serde(default)]
    pub pods: BTreeMap<String, u64>,
    /// Source address the server saw → count.
    #[serde(default)]
    pub clients: BTreeMap<String, u64>,
    #[serde(default)]
    pub errors: u64,
}

impl HttpSummary {
    pub fn count(&self, status: u16) -> u64 {
        self.status.get(&status.to_string()).copied().unwrap_or(0)
    }
}

/// Operations the scenarios use. Pods, services and nodes are the fixture's names (see
/// [`crate::scenarios::fixture`]).
pub trait MeshTarget: Sync {
    /// `meshwork-testapp get URL --count N -H ...` run inside pod `from`.
    fn http_get(
        &self,
        from: &str,
        url: &str,
        headers: &[(&str, &str)],
        count: u64,
    ) -> Result<HttpSummary, ScenarioError>;
    /// `http://<vip>:<port><path>` of a service.
    fn service_url(&self, service: &str, path: &str) -> Result<String, ScenarioError>;
    /// `http://<pod ip>:<port><path>`.
    fn pod_url(&self, pod: &str, port: u16, path: &str) -> Result<String, ScenarioError>;
    /// The pod's own address.
    fn pod_ip(&self, pod: &str) -> Result<std::net::IpAddr, ScenarioError>;
    /// Enrolls or unenrolls a pod, live.
    fn set_enrolled(&self, pod: &str, enrolled: bool) -> Result<(), ScenarioError>;
    /// Captures what crosses `node`'s link to the other nodes while `during` runs.
    fn capture_node_link(
        &self,
        node: &str,
        during: &mut dyn FnMut() -> Result<(), ScenarioError>,
    ) -> Result<Capture, ScenarioError>;
    /// Restarts the ztunnel of `node` (new process; old one drained/stopped).
    fn restart_ztunnel(&self, node: &str) -> Result<(), ScenarioError>;
    /// The Prometheus text of `node`'s ztunnel metrics (`istio_tcp_*`).
    fn ztunnel_metrics(&self, node: &str) -> Result<String, ScenarioError>;
    /// How long configuration changes may take to apply.
    fn settle(&self) -> Duration {
        Duration::from_secs(2)
    }
}
