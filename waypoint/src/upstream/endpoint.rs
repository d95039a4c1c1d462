//! An upstream endpoint: a workload address and port, with what metrics need about it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::upstream::connector::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// SPIFFE identity of the workload (`spiffe://td/ns/x/sa/y`).
    pub identity: Option<String>,
    /// The workload the pod belongs to, as Istio names it in `destination_workload` (the
    /// Deployment, not the pod; see `meshwork_model::view::workload_name`).
    pub workload: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Endpoint {
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            identity: self.identity.clone(),
        }
    }
}
