//! `braid-injector`: adds braid-init and braid-proxy to pods.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use braid_injector::args::InjectArgs;
use braid_injector::native_sidecars::NativeSidecars;
use braid_injector::webhook::{server, tls};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// braid's sidecar injector: a mutating admission webhook that adds `braid-init` (the
/// capture rules) and `braid-proxy` (the sidecar) to pods of labelled namespaces.
#[derive(Debug, Parser)]
#[command(name = "braid-injector", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the mutating admission webhook at POST /inject over HTTPS.
    Serve(ServeArgs),
    /// Inject into the pod templates of YAML files offline (Pods, Deployments,
    /// StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs), like `istioctl
    /// kube-inject`; other documents pass through. Prints the result.
    Inject {
        /// Input YAML file (several documents allowed); `-` for standard input.
        #[arg(short = 'f', long, default_value = "-")]
        filename: PathBuf,
        #[command(flatten)]
        inject: InjectArgs,
    },
    /// Remove exactly what `inject` (or the webhook) added, as recorded in each pod's
    /// `braid.dev/status` annotation. Prints the result.
    Uninject {
        /// Input YAML file; `-` for standard input.
        #[arg(short = 'f', long, default_value = "-")]
        filename: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Listen address.
    #[arg(long, env = "BRAID_LISTEN", default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Serving certificate (PEM); reloaded when it changes.
    #[arg(long, env = "BRAID_TLS_CERT")]
    tls_cert: PathBuf,
    /// Serving key (PEM); reloaded when it changes.
    #[arg(long, env = "BRAID_TLS_KEY")]
    tls_key: PathBuf,
    #[command(flatten)]
    inject: InjectArgs,
    /// Log filter, e.g. info or braid_injector=debug.
    #[arg(long, env = "BRAID_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Close a connection on which nothing has moved for this long, in seconds (also the
    /// limit for a request's headers to arrive). Keep it above the API server's own idle
    /// timeout for webhook connections (90 s), so the API server closes first.
    #[arg(long, env = "BRAID_IDLE_TIMEOUT_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_seconds: u64,
    /// Where Prometheus scrapes the injector's own metrics (`/metrics`, plain HTTP).
    #[arg(long, env = "BRAID_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
}

/// A failure is the user's to read: the message and each cause once, on one line, without
/// a backtrace even when `RUST_BACKTRACE` is set (anyhow prints one then).
fn main() -> std::process::ExitCode {
    braid_api::report::exit(run())
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Inject { filename, inject } => {
            let text = read_input(&filename)?;
            let native = inject.native_sidecars.unwrap_or(NativeSidecars::On);
            let native = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(native.resolve())?;
            print!(
                "{}",
                braid_injector::offline::inject_documents(&text, &inject.settings(native))?
            );
            Ok(())
        }
        Command::Uninject { filename } => {
            let text = read_input(&filename)?;
            print!("{}", braid_injector::offline::uninject_documents(&text)?);
            Ok(())
        }
    }
}

fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        // Waiting silently on a terminal looks like a hang.
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            anyhow::bail!(
                "no input: give -f FILE, or pipe YAML in (e.g. kubectl get deploy web -o yaml | braid-injector inject)"
            );
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("-f {}", path.display()))
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: redirected to a file, escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let cert = Arc::new(tls::ReloadingCert::new(
            args.tls_cert.clone(),
            args.tls_key.clone(),
        )?);
        let config = tls::server_config(cert.clone()).context("TLS configuration")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
        let stop = CancellationToken::new();
        tokio::spawn(cert.watch(Duration::from_secs(10), stop.clone()));
        let native = args
            .inject
            .native_sidecars
            .unwrap_or(NativeSidecars::Auto)
            .resolve()
            .await?;
        tracing::info!(
            native_sidecars = native,
            "{}",
            if native {
                "injecting braid-proxy as a native sidecar"
            } else {
                "injecting braid-proxy as the first container with postStart/preStop hooks"
            }
        );
        let metrics = Arc::new(braid_injector::metrics::InjectorMetrics::new());
        let metrics_for = metrics.clone();
        // The metrics are a side feature: a port it cannot bind is logged, not fatal (with
        // failurePolicy Fail, an injector that does not start blocks pod creation).
        match tokio::net::TcpListener::bind(args.metrics_addr).await {
            Ok(metrics_listener) => {
                let stop_metrics = stop.clone();
                tokio::spawn(async move {
                    let served = axum::serve(metrics_listener, server::metrics_router(metrics_for))
                        .with_graceful_shutdown(stop_metrics.cancelled_owned())
                        .await;
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "the metrics listener failed");
                    }
                });
            }
            Err(e) => tracing::warn!(
                addr = %args.metrics_addr,
                error = %e,
                "--metrics-addr: cannot bind; serving without metrics"
            ),
        }
        let router = server::counted_router(Arc::new(args.inject.settings(native)), metrics);
        tracing::info!(listen = %args.listen, "braid-injector serving /inject");
        let timeouts = server::Timeouts {
            idle: Duration::from_secs(args.idle_timeout_seconds),
            ..Default::default()
        };
        let serving = tokio::spawn(server::serve(
            listener,
            config,
            router,
            timeouts,
            stop.clone(),
        ));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
        let _ = serving.await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn inject_args(args: &[&str]) -> Result<InjectArgs, clap::Error> {
        let cli = Cli::try_parse_from(["braid-injector", "inject"].iter().chain(args))?;
        let Command::Inject { inject, .. } = cli.command else {
            panic!("not inject");
        };
        Ok(inject)
    }

    #[test]
    fn observability_flags_set_the_defaults_and_are_checked_at_start() {
        let settings = inject_args(&[]).unwrap().settings(true);
        assert_eq!(
            (
                settings.access_log.as_str(),
                settings.trace_collector.as_deref(),
                settings.trace_sampling.as_str()
            ),
            ("off", None, "1")
        );
        let settings = inject_args(&[
            "--proxy-access-log",
            "json",
            "--trace-collector",
            "http://otel-collector.observability:4318",
            "--trace-sampling",
            "0.5",
        ])
        .unwrap()
        .settings(true);
        assert_eq!(settings.access_log, "json");
        assert_eq!(
            settings.trace_collector.as_deref(),
            Some("http://otel-collector.observability:4318")
        );
        assert_eq!(settings.trace_sampling, "0.5");
        // Empty, as a Deployment may set the variable: no collector.
        let settings = inject_args(&["--trace-collector", " "])
            .unwrap()
            .settings(true);
        assert_eq!(settings.trace_collector, None);
        // "off" is none too; a URL is kept in the proxy's normal form, as are percents.
        let settings = inject_args(&["--trace-collector", "off"])
            .unwrap()
            .settings(true);
        assert_eq!(settings.trace_collector, None);
        let settings = inject_args(&[
            "--trace-collector",
            "http://otel/",
            "--trace-sampling",
            "5%",
        ])
        .unwrap()
        .settings(true);
        assert_eq!(
            (
                settings.trace_collector.as_deref(),
                settings.trace_sampling.as_str()
            ),
            (Some("http://otel:4318"), "5")
        );
        for (flag, value, says) in [
            ("--proxy-access-log", "yes", "neither \"json\" nor \"off\""),
            (
                "--trace-collector",
                "https://otel:4318",
                "TLS to the collector",
            ),
            (
                "--trace-collector",
                "http://otel:4318/v1/traces",
                "leave out /v1/traces",
            ),
            ("--trace-collector", "OFF", "write \"off\" (lowercase)"),
            ("--trace-sampling", "200", "above 100"),
        ] {
            let e = inject_args(&[flag, value]).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(says), "{flag} {value}: {e}");
        }
    }

    // Found by a newcomer: `inject` put `:latest` into pods while the install deploys the
    // release's tag, so offline and webhook injection disagreed.
    #[test]
    fn the_default_image_is_the_tag_the_manifests_deploy() {
        let cli = Cli::try_parse_from(["braid-injector", "inject"]).unwrap();
        let Command::Inject { inject, .. } = cli.command else {
            panic!("not inject");
        };
        let kustomization = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/kustomization.yaml"
        ))
        .unwrap();
        let tag = kustomization
            .lines()
            .find_map(|l| l.trim().strip_prefix("newTag: "))
            .unwrap();
        assert_eq!(
            inject.proxy_image,
            format!("ghcr.io/braid-mesh/braid:{tag}")
        );
    }
}
