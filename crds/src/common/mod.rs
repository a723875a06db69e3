//! Types shared by the three resources.

mod duration;
mod selector;

pub use duration::{DURATION_MAX_LENGTH, DURATION_PATTERN, Duration, DurationError};
pub use selector::{SelectorOperator, SelectorRequirement, WorkloadSelector};

/// The condition type every braid resource reports: whether the operator accepted the spec.
pub const CONDITION_ACCEPTED: &str = "Accepted";
