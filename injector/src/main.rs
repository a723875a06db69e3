//! `braid-injector`: adds braid-init and braid-proxy to pods.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// braid's sidecar injector.
///
/// STATUS: this build only parses flags. `serve` and `inject` exit with an error saying
/// so; they arrive with the injector issue.
#[derive(Debug, Parser)]
#[command(name = "braid-injector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the mutating admission webhook at /inject over HTTPS (not implemented yet).
    Serve {
        /// Listen address.
        #[arg(long, env = "BRAID_LISTEN", default_value = "0.0.0.0:9443")]
        listen: SocketAddr,
        /// Serving certificate (PEM); reloaded when it changes.
        #[arg(long, env = "BRAID_TLS_CERT")]
        tls_cert: PathBuf,
        /// Serving key (PEM); reloaded when it changes.
        #[arg(long, env = "BRAID_TLS_KEY")]
        tls_key: PathBuf,
    },
    /// Inject into pod-bearing YAML offline, like `istioctl kube-inject` (not implemented yet).
    Inject {
        /// Input YAML file; `-` for standard input.
        #[arg(short = 'f', long, default_value = "-")]
        filename: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Serve { .. } => "serve",
        Command::Inject { .. } => "inject",
    };
    anyhow::bail!(
        "braid-injector {name} is not implemented in this build: flags are parsed, nothing runs \
         (it arrives with the injector issue)"
    )
}
