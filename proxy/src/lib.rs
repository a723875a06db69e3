//! braid's sidecar proxy.
//!
//! Accept → original destination → protocol (configured or detected) → HTTP through
//! the HTTP/1.1 relay, hyper (HTTP/2) or a TCP splice → upstream. Driven only by a
//! generated [`config::ProxyConfig`], built into the [`tables`] every connection reads.

pub mod admin;
pub mod app;
pub mod authz;
pub mod backoff;
pub mod balance;
pub mod cli;
pub mod config;
pub mod connection;
pub mod control;
pub mod detect;
pub mod discovery;
pub mod explain;
pub mod handover;
pub mod http;
pub mod identity;
pub mod io;
pub mod iptables;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod memory;
pub mod metrics;
pub mod overload;
#[cfg(test)]
mod props;
pub mod reports;
pub mod routing;
pub mod runtime;
pub mod supervise;
pub mod tables;
pub mod tcp;
pub mod telemetry;
pub mod tls;
