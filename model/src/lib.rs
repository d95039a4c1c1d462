//! The mesh model shared by the control plane and the proxies.
//!
//! `pb` holds the generated wire types (from `proto/`); the other modules give them the
//! behaviour every component needs: resource keys and content versions ([`keys`]), an
//! indexed read-only view of a proxy's configuration ([`snapshot`]), and the subscription
//! client a proxy uses to follow the control plane ([`client`]), and where a proxy's
//! bearer token comes from ([`token`]); both proxies get their certificates through [`certs`]
//! (the CA client, [`ca_client`], is one of its signers). The mesh rules every component must read alike
//! (mTLS per port, waypoint binding, the Gateway route host, route weights) are in [`rules`]; the compact
//! view of a remote workload a ztunnel holds is [`view`].

pub mod ca_client;
pub mod certs;
pub mod client;
pub mod endpoint;
pub mod flags;
pub mod keys;
pub mod rules;
pub mod snapshot;
pub mod static_config;
pub mod token;
pub mod view;

pub mod pb {
    pub mod config {
        tonic::include_proto!("meshwork.config.v1");
    }
    pub mod istio_ca {
        tonic::include_proto!("istio.v1.auth");
    }
    /// The OTLP trace messages and `TraceService` (client and server).
    pub mod otlp {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.common.v1");
            }
        }
        pub mod resource {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.resource.v1");
            }
        }
        pub mod trace {
            pub mod v1 {
                tonic::include_proto!("opentelemetry.proto.trace.v1");
            }
        }
        pub mod collector {
            pub mod trace {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
                }
            }
        }
    }
}

pub use keys::{resource_version, Kind};
pub use snapshot::Snapshot;
