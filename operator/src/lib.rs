//! braid's operator: turns what administrators apply into one generated `ProxyConfig`
//! per workload and streams it to the proxies.
//!
//! source (Kubernetes or a directory) → [`registry::Snapshot`] → [`compiler`] → per-pod
//! configs → [`stream`] to proxies; proxies' reports → [`status`] of every resource and
//! the [`healer`], which acts on endpoints proxies keep ejecting.

pub mod access;
pub mod admin;
pub mod app;
pub mod ca;
pub mod cli;
pub mod compiler;
pub mod debug;
pub mod dir_mode;
pub mod healer;
pub mod hub;
pub mod kube_mode;
pub mod leader;
pub mod metrics;
pub mod off_runtime;
pub mod registry;
pub mod rollout;
pub mod sink;
pub mod source;
pub mod status;
pub mod stream;
