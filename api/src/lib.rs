//! The contract between braid's components, as linkerd2-proxy-api is Linkerd's: what the
//! operator writes and the proxy reads (the [`config`] and the [`control`] stream), and
//! the names and numbers the injector writes into pods and the proxy then listens on
//! ([`ports`]). Operator, injector and end-to-end tests depend on this crate, never on
//! another component's; a change of the contract is a change here.

pub mod config;
pub mod control;
pub mod debug;
pub mod duration;
pub mod explain;
pub mod exposition;
pub mod identity;
pub mod invalid;
pub mod log;
pub mod metrics_reference;
pub mod ports;
pub mod probes;
pub mod report;
pub mod telemetry;
