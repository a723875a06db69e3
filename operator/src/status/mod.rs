//! Status of every braid resource: `observedGeneration`, the `Accepted` condition and
//! how many proxies carry it. Computed by a pure function ([`compute`]); written by a
//! [`StatusSink`] (server-side apply in Kubernetes, files in directory mode).

mod compute;
mod files;
pub mod kube;
#[cfg(test)]
pub mod recorded;
mod sink;

pub use self::kube::KubeSink;
pub use compute::{Computed, ProxyState, Views, compute};
pub use files::FileSink;
pub use sink::{Event, StatusError, StatusSink, StatusUpdate};
