//! Istio `AuthorizationPolicy` evaluation over the mesh model
//! (`meshwork_model::pb::config::Authorization`).
//!
//! Used by ztunnel (L4: no HTTP attributes), the waypoint (L7) and the CLI ("which policy and
//! rule decided"). The semantics follow Istio:
//!
//! * CUSTOM policies are evaluated first; a matching CUSTOM policy hands the request to an
//!   external provider, which this crate does not implement ([`Outcome::Custom`]).
//! * If any DENY policy matches, the request is denied.
//! * If there are no ALLOW policies, the request is allowed.
//! * Otherwise the request is allowed only if some ALLOW policy matches.
//! * AUDIT policies never change the decision; their matches are reported.
//! * Dry-run policies are evaluated and reported, never enforced.
//!
//! [`explain`] decides one request end to end as the data path would (`meshwork authz check`).
//!
//! Without HTTP attributes the [`Enforcer`] a policy is compiled for decides:
//!
//! * [`Enforcer::Envoy`] (the waypoint's TCP path; [`Policy::compile`]): an ALLOW/AUDIT rule
//!   that carries L7 attributes does not match, and a DENY/CUSTOM rule's L7 parts are ignored
//!   (it matches more). [`l4_view`] produces the equivalent policy with those parts removed.
//! * [`Enforcer::Ztunnel`] (a ztunnel, unless the mesh opts in to
//!   `meshwork.ztunnelPolicyFailClosed`): exactly as Istio's ztunnel; CUSTOM/AUDIT do not
//!   apply and a DENY rule's HTTP-only parts match nothing.

mod condition;
mod context;
mod error;
mod evaluate;
pub mod explain;
mod ip;
mod l4;
mod path;
mod rule;
mod select;
mod strmatch;

pub use context::{Claim, HttpAttributes, RequestContext};
pub use error::AuthzError;
pub use evaluate::{evaluate, evaluate_pb, Decision, Outcome, PolicyMatch};
pub use l4::{l4_view, rule_has_l7};
pub use rule::{validate, Enforcer, Policy};
pub use select::{applicable, PolicyTarget};
