//! The Kubernetes source: kube-rs watchers feeding the same validated store as the YAML
//! directory source.
//!
//! - [`resources`]: the watched kinds and the API version each is watched at;
//! - [`pseudo`]: every object is a pseudo-file `k8s://<Kind>/<ns>/<name>` holding its JSON;
//! - [`index`]: watch events (including relists after `410 Gone`) → [`FileEvent`]s;
//! - [`status`]: `Accepted` conditions written back on Istio resources (leader only);
//! - [`route_status`]: `status.parents[]` of routes attached to waypoint Gateways (leader
//!   only);
//! - [`lease`]: leader election through a `coordination.k8s.io/v1` Lease;
//! - [`tokenreview`]: ztunnel node tokens checked with TokenReview, pod → node;
//! - [`prune`]: the fields of each object translation reads, the only ones kept;
//! - [`discovery`]: CRDs watched, so Istio and Gateway API kinds start and stop live;
//! - [`health`]: kinds that cannot be watched (`403`…), reported with the config errors;
//! - [`watch`]: the watchers, producing batches like [`crate::source::dir::watch`];
//! - [`canary`]: the canary controller's writes (routing by server-side apply, Canary
//!   status, Events; leader only);
//! - [`waypoints`]: the deployment controller creating each waypoint Gateway's
//!   ServiceAccount, Deployment and Service (leader only).
//!
//! [`FileEvent`]: crate::source::FileEvent

pub mod ca_secret;
pub mod canary;
pub mod discovery;
pub mod error;
pub mod health;
pub mod index;
pub mod leader_writes;
pub mod lease;
pub mod prune;
pub mod pseudo;
pub mod resources;
pub mod root_cert;
pub mod route_status;
pub mod status;
#[cfg(any(test, feature = "test-util"))]
pub mod test_api;
pub mod tokenreview;
pub mod watch;
pub mod waypoints;

pub use crate::ca::{NodeAuthError, NodeAuthenticator};
pub use error::KubeSourceError;
pub use health::SourceHealth;
pub use index::{KindIndex, SourceIndex};
pub use resources::{WatchedKind, WATCHED};
pub use tokenreview::TokenReviewAuthenticator;
pub use watch::{watch, KubeSourceOptions, Served, SourceHandle};
