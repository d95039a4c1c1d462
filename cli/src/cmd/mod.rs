//! One module per subcommand.

pub mod analyze;
pub mod authz;
pub mod demo;
pub mod errors;
pub mod observe;
pub mod proxy_config;
pub mod rollout;
pub mod up;
pub mod validate;
pub mod waypoint;
pub mod waypoint_dir;
pub mod waypoint_kube;
pub mod waypoint_manifest;
