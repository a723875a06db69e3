//! AccessPolicies' evidence and automatic enforcement: proxies report what each policy
//! decided (and whom it refused, or would refuse); the operator sums it per policy over
//! a window for status (`decisions`, `deniedSources`, `SafeToEnforce`) and moves a
//! policy with a `rollout` from Audit to Enforce once a whole interval is clean, and
//! back when it refuses a caller it let through while auditing.

mod book;
mod plan;
mod run;

#[cfg(test)]
mod tests;

pub use run::{ACCESS_QUEUE, AccessBatch, AccessLoop, AccessState, AccessView};
