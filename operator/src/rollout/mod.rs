//! Automatic mTLS rollouts: proxies report how many requests reached their app over mTLS
//! and in plaintext (and from where), and how their own calls fared; the operator moves
//! each EncryptionPolicy's rollout on step by step, steps back when callers fail more,
//! enforces Strict once no plaintext arrives, and shows it all in status.

mod lagging;
mod plan;
mod run;
mod scope;
mod traffic;

#[cfg(test)]
mod tests;

pub use plan::{Hold, Safety};
pub use run::{EncryptionState, EncryptionView, RolloutLoop, TRAFFIC_QUEUE, TrafficBatch};
