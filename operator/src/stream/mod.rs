//! The config stream: proxies connect over HTTP/2 + TLS, prove which pod they are, and
//! receive their own config, then every new version of it.

pub mod auth;
pub mod relay;
pub mod server;
pub mod tls;
pub mod token_review;
pub mod view;
