//! The proxy's config: the wire types (`ProxyConfig` and its parts, from `braid-api`,
//! the contract the operator writes), how they are read (a file, or a line of the
//! operator's stream: `source.rs`), and the routing tables built from them (`tables.rs`).

mod source;
mod tables;

pub use braid_api::config::*;
pub use source::{ConfigError, ConfigSource, FileSource, load_file, parse_json};
pub use tables::{ListenerPlan, OutboundTarget, PickError, Selected, Tables};
