//! What an operator replica tells people on its admin port, for `braidctl`:
//! `GET /debug/info` (its name, version and whether it leads) and `GET /debug/proxies`
//! (every proxy: the version it should hold and the one it reported, when, since when
//! its stream is open here, its own version and certificate expiry). Read-only.

pub mod ledger;
pub mod proxies;

pub use ledger::{ProxyLedger, Said};
