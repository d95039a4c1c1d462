//! The mesh model shared by the control plane and the proxies.
//!
//! `pb` holds the generated wire types; the helper modules give them the behaviour every
//! component needs (resource keys, versions, SPIFFE names).

pub mod pb {
    pub mod config {
        tonic::include_proto!("meshwork.config.v1");
    }
    pub mod istio_ca {
        tonic::include_proto!("istio.v1.auth");
    }
}
