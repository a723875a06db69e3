//! `braid-proxy`: the sidecar every meshed pod runs.

use std::sync::Arc;
use std::time::Duration;

use braid_proxy::cli::{Cli, Command};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// A failure is the user's to read: the message and each cause once, on one line, without
/// a backtrace even when `RUST_BACKTRACE` is set (anyhow prints one then).
fn main() -> std::process::ExitCode {
    braid_api::report::exit(run())
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Iptables(args) => braid_proxy::iptables::run(&args).map_err(Into::into),
        Command::WaitReady(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(braid_proxy::lifecycle::wait_ready::wait(
                args.admin_addr,
                Duration::from_secs(args.timeout_secs),
            )),
        Command::WaitAppExit(args) => {
            use braid_proxy::lifecycle::wait_app_exit::{Options, Outcome, wait};
            let options = Options {
                admin: args.admin_addr,
                app_ports: args.app_ports,
                pod_ip: args.pod_ip,
                poll: Duration::from_millis(args.poll_ms),
                quiet: Duration::from_millis(args.quiet_ms),
            };
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(wait(&options, |why| {
                    eprintln!("wait-app-exit: waiting: {why}")
                }));
            match outcome {
                Outcome::AppExited => eprintln!("wait-app-exit: the app has exited"),
                Outcome::ProxyGone => eprintln!(
                    "wait-app-exit: the proxy's admin port at {} does not answer; nothing to wait for",
                    options.admin
                ),
            }
            Ok(())
        }
        Command::Supervise(args) => {
            tracing_subscriber::fmt().with_target(false).init();
            let settings = braid_proxy::supervise::supervisor::Settings {
                dir: args.dir,
                run_args: args.run,
            };
            let code = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(braid_proxy::supervise::supervisor::supervise(&settings))?;
            // The child's own status, as if it had been the container's process.
            std::process::exit(code);
        }
        Command::Upgrade(args) => {
            use braid_proxy::supervise::request::UpgradeAnswer;
            let answer = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(braid_proxy::supervise::upgrade::upgrade(
                    &args.dir,
                    &args.binary,
                    args.sha256,
                    args.timeout,
                ))?;
            match answer {
                UpgradeAnswer::Upgraded {
                    from_pid,
                    to_pid,
                    sha256,
                } => {
                    println!("upgraded: proxy pid {from_pid} -> {to_pid}, binary sha256 {sha256}");
                    Ok(())
                }
                UpgradeAnswer::Refused { reason } => anyhow::bail!("not upgraded: {reason}"),
            }
        }
        Command::Run(args) => {
            let filter = EnvFilter::try_new(&args.log_level)
                .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
            let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
            // Colours only on a terminal: redirected to a file, escape codes are noise.
            let fmt = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
            let registry = tracing_subscriber::registry().with(filter);
            if args.log_json {
                registry.with(fmt.json()).init();
            } else {
                registry.with(fmt).init();
            }
            let set_level: braid_proxy::admin::SetLogLevel = Arc::new(move |level: &str| {
                handle.reload(EnvFilter::try_new(level)?)?;
                Ok(())
            });
            let workers = args
                .workers
                .unwrap_or_else(braid_proxy::runtime::default_workers);
            // One worker: a current-thread runtime skips the work-stealing machinery a
            // one-CPU sidecar cannot use.
            let runtime = if workers <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .enable_all()
                    .build()?
            };
            runtime.block_on(braid_proxy::app::run(args, set_level))
        }
    }
}
