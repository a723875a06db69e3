//! Status of every braid resource: `observedGeneration`, the `Accepted` condition and
//! how many proxies carry it, with what the healer and the rollout loop show. Computed
//! by a pure function ([`compute`]); written through a [`crate::sink::StatusSink`].

mod compute;
mod refs;

pub use compute::{Computed, ProxyState, Views, compute};
pub use refs::RESOLVED_REFS;
