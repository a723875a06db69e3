//! The mutating admission webhook.

pub mod review;
pub mod server;
pub mod tls;
