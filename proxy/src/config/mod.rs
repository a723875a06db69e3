//! The proxy's config as the operator writes it (or a file holds it): the wire types of
//! the contract crate, `braid-api`. What the proxy builds from them is in `tables/`.

pub use braid_api::config::*;
pub use braid_api::invalid::InvalidField;
