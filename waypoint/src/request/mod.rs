//! The L7 request path. [`service::L7Service::handle`] runs the stages in this order:
//!
//! 1. [`authority`]: one authority per request (the target URI's wins over `Host`);
//! 2. [`normalize`]: the path every later stage sees;
//! 3. [`target`]: the service (or pod) the request is for;
//! 4. [`wasm`]: WasmPlugins of the AUTHN and AUTHZ phases, then [`authz`]: the waypoint's
//!    AuthorizationPolicies (denials are answered here), then the STATS and UNSPECIFIED
//!    plugins (whose response callbacks run on whatever answers);
//! 5. [`routing`]: the route, and its [`cors`], redirect, direct response and [`fault`];
//! 6. [`rewrite`] and [`headers`]: the request as the upstream will see it;
//! 7. the upstream ([`crate::upstream::forward`]), under the route timeout
//!    ([`request_end`]: timers start once the request has been received in full).
//!
//! Replies the waypoint makes itself (404, 503, 504…) are [`local_reply`]s, with the
//! response [`flags`] the metrics and access log report.

pub mod authority;
pub mod authz;
pub mod conn;
pub mod cors;
pub(crate) mod exchange;
pub mod fault;
pub mod flags;
pub mod headers;
pub mod local_reply;
pub mod normalize;
pub mod request_end;
pub mod rewrite;
pub(crate) mod route;
pub mod routing;
pub mod service;
pub mod target;
pub(crate) mod wasm;

pub use conn::ConnContext;
pub use service::{L7Service, Options};
