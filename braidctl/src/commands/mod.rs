//! One file per subcommand.

pub mod check;
pub mod explain;
pub mod inject;
pub mod install;
pub mod proxy_config;
pub mod proxy_status;
pub mod stat;
pub mod status;
pub mod version;
