//! One module per subcommand.

pub mod errors;
pub mod validate;
