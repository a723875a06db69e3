//! `braid-proxy`: the sidecar every meshed pod runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// braid's sidecar proxy.
///
/// STATUS: this build only parses flags. `run`, `iptables` and `wait-ready` exit with an
/// error saying so; they arrive with the proxy-core issue.
#[derive(Debug, Parser)]
#[command(name = "braid-proxy", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (not implemented yet).
    Run(RunArgs),
    /// Install the pod's iptables capture rules; runs in the braid-init container (not implemented yet).
    Iptables(IptablesArgs),
    /// Wait until the local proxy reports ready; used as a postStart hook (not implemented yet).
    WaitReady(WaitReadyArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Load the generated ProxyConfig from this file and reload it when it changes.
    #[arg(long, env = "BRAID_CONFIG", conflicts_with = "operator")]
    config: Option<PathBuf>,
    /// Stream config from the operator at this URL (e.g. https://braid-operator.braid-system:8443).
    #[arg(long, env = "BRAID_OPERATOR")]
    operator: Option<String>,
    /// Admin listener (/config_dump, /metrics, /ready, /logging).
    #[arg(long, env = "BRAID_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Worker threads; default: the container's CPU limit.
    #[arg(long, env = "BRAID_WORKERS")]
    workers: Option<usize>,
    /// Log filter, e.g. info or braid_proxy=debug.
    #[arg(long, env = "BRAID_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[derive(Debug, Args)]
struct IptablesArgs {
    /// UID the proxy runs as; its own traffic is not captured.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// GID the proxy runs as; its own traffic is not captured.
    #[arg(long, default_value_t = 1337)]
    proxy_gid: u32,
    /// Comma-separated inbound ports left uncaptured.
    #[arg(long, value_delimiter = ',')]
    exclude_inbound_ports: Vec<u16>,
    /// Comma-separated outbound ports left uncaptured.
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_ports: Vec<u16>,
    /// Comma-separated outbound CIDRs left uncaptured.
    #[arg(long, value_delimiter = ',')]
    exclude_outbound_cidrs: Vec<String>,
}

#[derive(Debug, Args)]
struct WaitReadyArgs {
    /// The proxy's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Run(_) => "run",
        Command::Iptables(_) => "iptables",
        Command::WaitReady(_) => "wait-ready",
    };
    anyhow::bail!(
        "braid-proxy {name} is not implemented in this build: flags are parsed, nothing runs \
         (it arrives with the proxy-core issue)"
    )
}
