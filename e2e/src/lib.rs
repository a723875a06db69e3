//! braid's end-to-end harness: every "pod" a network namespace on a bridge, captured by
//! the same `braid-proxy iptables` command the injector writes into real pods.
//!
//! Not built yet: the harness arrives with the proxy core, which it needs. Until then this
//! crate is an empty member of the workspace and runs no scenario.
