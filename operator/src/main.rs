//! `braid-operator`: turns braid resources into proxy config and streams it.

use braid_operator::cli::Cli;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Each change allocates and frees large temporaries (snapshots, configs, their JSON) on
/// whichever threads run it; glibc's per-thread arenas kept that memory, so RSS climbed
/// with every change (`make bench-scale`). mimalloc returns it; the Deployment sets
/// `MIMALLOC_PURGE_DELAY=0` so that it does at once, not a second after each change.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A failure is the user's to read: the message and each cause once, on one line, without
/// a backtrace even when `RUST_BACKTRACE` is set (anyhow prints one then).
fn main() -> std::process::ExitCode {
    braid_api::report::exit(run())
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", cli.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: redirected to a file, escape codes are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(braid_operator::app::run(cli))
}
