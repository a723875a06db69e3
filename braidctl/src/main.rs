//! `braidctl`: one tool to check, see and explain a braid mesh (see `braidctl --help`).

mod cli;
mod commands;
mod http;
mod manifests;
mod mesh;
mod output;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, Explain};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube's TLS uses rustls; name its provider, as a build with more than one (a
    // workspace build unifies features) cannot pick one itself. An error means one is
    // installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("braidctl: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("braidctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match &cli.command {
        Command::Check(args) => commands::check::run(g, args).await,
        Command::Status => commands::status::run(g).await,
        Command::ProxyStatus => commands::proxy_status::run(g).await,
        Command::ProxyConfig(args) => commands::proxy_config::run(g, args).await,
        Command::Explain(args) => match &args.what {
            Explain::Request(r) => commands::explain::run(g, r).await,
            Explain::Inbound(i) => commands::explain::run_inbound(g, i).await,
        },
        Command::Stat(args) => commands::stat::run(g, args).await,
        Command::Inject(args) => commands::inject::run(g, args).await,
        Command::Uninject(args) => commands::inject::run_uninject(args),
        Command::Install(args) => commands::install::run(g, args).await,
        Command::Version => commands::version::run(g).await,
    }
}
