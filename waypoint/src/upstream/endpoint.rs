//! An upstream endpoint: a workload address and port, with what metrics need about it.

use std::net::SocketAddr;

use meshwork_model::view::PeerName;

use crate::upstream::connector::Target;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// SPIFFE identity of the workload (`spiffe://td/ns/x/sa/y`).
    pub identity: Option<String>,
    /// How metrics and logs name the workload: its Deployment, namespace, canonical name
    /// and revision (`meshwork_model::view::PeerName`, the ztunnel's rule too).
    pub name: PeerName,
}

impl Endpoint {
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            identity: self.identity.clone(),
        }
    }
}
