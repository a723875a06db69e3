//! Types shared by the three resources.

mod duration;
mod labels;
mod selector;

pub use duration::{DURATION_MAX_LENGTH, DURATION_PATTERN, Duration, DurationError};
pub use labels::{label_map_schema, non_empty_label_map_schema};
pub use selector::{SelectorOperator, SelectorRequirement, WorkloadSelector};

/// The condition type every braid resource reports: whether the operator accepted the spec.
pub const CONDITION_ACCEPTED: &str = "Accepted";
