//! `braid-proxy iptables`: the pod's capture rules. Generating them is pure
//! ([`rules::render`]); applying them shells out to `iptables-restore` on the backend the
//! host uses ([`backend`]).

mod apply;
mod backend;
mod rules;

pub use apply::run;
pub use backend::Backend;
pub use rules::{CaptureSpec, Family, render};

use std::net::IpAddr;

use clap::{Args, ValueEnum};

/// The proxy's own ports: never captured.
pub const PROXY_PORTS: [u16; 4] = {
    let p = braid_api::ports::PROXY_PORTS;
    [p[0].0, p[1].0, p[2].0, p[3].0]
};

/// Flags of `braid-proxy iptables`.
#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// UID the proxy runs as; its own traffic is not captured.
    #[arg(long, default_value_t = braid_api::ports::PROXY_UID)]
    pub proxy_uid: u32,
    /// GID the proxy runs as; its own traffic is not captured.
    #[arg(long, default_value_t = braid_api::ports::PROXY_UID)]
    pub proxy_gid: u32,
    /// Port of the proxy's inbound listener.
    #[arg(long, default_value_t = braid_api::ports::INBOUND_PORT)]
    pub inbound_port: u16,
    /// Port of the proxy's outbound listener.
    #[arg(long, default_value_t = braid_api::ports::OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Source address the proxy uses towards the app; let through.
    #[arg(long, default_value_t = IpAddr::V4(braid_api::ports::INBOUND_SOURCE))]
    pub inbound_source: IpAddr,
    /// Inbound ports left uncaptured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound ports left uncaptured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Outbound destinations left uncaptured, comma-separated CIDRs.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<String>,
    /// Only these outbound destinations are captured (comma-separated CIDRs); default: all.
    #[arg(long, value_delimiter = ',')]
    pub include_outbound_cidrs: Vec<String>,
    /// Which iptables backend to use; `auto` picks the one the host already uses.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Print the rules instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove braid's rules and chains instead of installing them.
    #[arg(long)]
    pub cleanup: bool,
}

/// The `--backend` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The backend holding the host's existing rules; nft when none has any.
    Auto,
    /// iptables-nft.
    Nft,
    /// iptables-legacy.
    Legacy,
}

/// Why the rules could not be installed. The init container exits non-zero with this,
/// so the pod fails visibly instead of running uncaptured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A flag value is malformed.
    #[error("{flag}: {message}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// No usable iptables binary was found.
    #[error("no iptables found ({0}): the init image needs iptables (nft or legacy)")]
    NoIptables(String),
    /// A command failed.
    #[error("{command} failed: {message} (the init container needs NET_ADMIN and NET_RAW)")]
    Command {
        /// The command.
        command: String,
        /// Its error output.
        message: String,
    },
}
