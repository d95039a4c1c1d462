//! HTTP routing: compiled route configs, request matching and destination selection.

pub mod r#match;
pub mod select;

pub use r#match::{
    CompiledRoute, CompiledRouteConfig, MatchInput, MatchedPrefix, RouteError, REGEX_SIZE_LIMIT,
};
pub use select::{pick_weighted, subset_matches};
