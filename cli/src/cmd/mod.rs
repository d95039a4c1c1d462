//! One module per subcommand.

pub mod demo;
pub mod errors;
pub mod validate;
