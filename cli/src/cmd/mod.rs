//! One module per subcommand.

pub mod analyze;
pub mod authz;
pub mod demo;
pub mod errors;
pub mod proxy_config;
pub mod validate;
