//! `braid-operator`: turns braid resources into proxy config and streams it.

use std::net::SocketAddr;

use clap::Parser;

/// braid's operator.
///
/// STATUS: this build only parses flags and exits with an error saying so; the
/// controllers, compiler and config stream arrive with the operator-core issue.
#[derive(Debug, Parser)]
#[command(name = "braid-operator", version)]
struct Cli {
    /// Where resources come from: `kube` (the cluster) or `dir:PATH` (CRD YAML and a
    /// registry file in a directory, for running without a cluster).
    #[arg(long, env = "BRAID_SOURCE", default_value = "kube")]
    source: String,
    /// Address of the config stream (HTTPS) that proxies connect to.
    #[arg(long, env = "BRAID_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// SPIFFE trust domain of the identities this operator issues.
    #[arg(long, env = "BRAID_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Log filter, e.g. info or braid_operator=debug.
    #[arg(long, env = "BRAID_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!(
        "braid-operator is not implemented in this build: flags are parsed, nothing runs \
         (it arrives with the operator-core issue)"
    )
}
