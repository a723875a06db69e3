//! Semantic validation: every error with its field path and what to do about it.
//!
//! The API server enforces the schema (types, enums, ranges, patterns, bounds) and the
//! CEL rules. `validate()` checks all of those again, because resources also arrive from
//! the directory source and from clusters that skip CEL, and adds what a schema cannot
//! say (regexes that compile, label syntax, timeouts that fit together).

mod path;
mod report;
mod request;
mod syntax;

pub use path::FieldPath;
pub use report::{Report, ValidationError, ValidationErrors};
pub(crate) use request::*;
pub(crate) use syntax::*;

/// A resource (or part of one) that can check itself.
pub trait Validate {
    /// Returns every problem found, not just the first, so a user fixes them in one go.
    fn validate(&self) -> Result<(), ValidationErrors>;
}
