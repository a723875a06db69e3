//! The supervisor: runs the proxy as its child, forwards the signals it gets, exits as
//! its child exits, and on an upgrade request starts the new binary beside the running
//! child; the new proxy takes over through the handover socket, the old one exits, and
//! the new one is the child from then on.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use super::digest::install;
use super::request::{UpgradeAnswer, UpgradeRequest};
use super::{binaries, control_socket, handover_socket};

/// How long `upgrade` has to send its request once connected.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// The largest request line.
const MAX_REQUEST: u64 = 64 * 1024;

/// What the supervisor runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Its directory: the handover and control sockets, and installed binaries.
    pub dir: PathBuf,
    /// The arguments of `braid-proxy run`.
    pub run_args: Vec<OsString>,
}

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Setting up or running failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The arguments would fight the supervisor's own.
    #[error(
        "braid-proxy supervise sets --handover-socket itself ({0}); leave it out of the run arguments"
    )]
    OwnHandover(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SuperviseError {
    let what = what.into();
    move |source| SuperviseError::Io { what, source }
}

/// A proxy the supervisor started.
struct Proxy {
    child: Child,
    pid: u32,
    sha256: String,
    binary: PathBuf,
}

/// An upgrade under way: the new proxy, and who asked.
struct Pending {
    proxy: Proxy,
    asked: UnixStream,
}

/// Runs the supervisor until its child exits; returns the exit code the supervisor
/// should exit with (the child's, or 128 + the signal that ended it).
pub async fn supervise(settings: &Settings) -> Result<i32, SuperviseError> {
    let handover = handover_socket(&settings.dir);
    if settings
        .run_args
        .iter()
        .any(|a| a.to_string_lossy().starts_with("--handover-socket"))
    {
        return Err(SuperviseError::OwnHandover(handover.display().to_string()));
    }
    let control = listen(&settings.dir)?;
    let exe = std::env::current_exe().map_err(io("finding this binary"))?;
    let mut current = start(&exe, settings, "-".to_owned())?;
    tracing::info!(pid = current.pid, dir = %settings.dir.display(), "supervising the proxy");
    // The supervisor waits in one small loop: the binary's other code (the whole proxy)
    // it mapped while starting goes, as the proxy's own start-up code does.
    match crate::memory::release_startup_pages() {
        Ok(bytes) => tracing::debug!(bytes, "released start-up pages"),
        Err(e) => tracing::debug!(error = %e, "could not release start-up pages"),
    }
    let mut pending: Option<Pending> = None;
    let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT"))?;
    loop {
        tokio::select! {
            status = current.child.wait() => {
                let status = status.map_err(io("waiting for the proxy"))?;
                let Some(next) = pending.take() else {
                    tracing::info!(%status, "the proxy exited");
                    return Ok(exit_code(status));
                };
                tracing::info!(from = current.pid, to = next.proxy.pid, %status, "upgraded: the replaced proxy has exited");
                let answer = UpgradeAnswer::Upgraded {
                    from_pid: current.pid,
                    to_pid: next.proxy.pid,
                    sha256: next.proxy.sha256.clone(),
                };
                reply(next.asked, &answer).await;
                current = next.proxy;
                prune(&binaries(&settings.dir), &current.binary);
            }
            status = new_exits(&mut pending), if pending.is_some() => {
                if let Some(failed) = pending.take() {
                    let reason = format!(
                        "the new proxy (pid {}) exited ({}) before the running one handed over; the running proxy keeps serving; the new one's output is in this supervisor's log",
                        failed.proxy.pid,
                        status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    );
                    tracing::warn!("{reason}");
                    reply(failed.asked, &UpgradeAnswer::Refused { reason }).await;
                }
            }
            _ = term.recv() => forward(Signal::TERM, &current, &pending),
            _ = int.recv() => forward(Signal::INT, &current, &pending),
            accepted = control.accept() => {
                let Ok((mut asked, _)) = accepted else { continue };
                if pending.is_some() {
                    let reason = "an upgrade is already under way".to_owned();
                    reply(asked, &UpgradeAnswer::Refused { reason }).await;
                    continue;
                }
                match begin(&mut asked, settings).await {
                    Ok(proxy) => {
                        tracing::info!(pid = proxy.pid, sha256 = %proxy.sha256, "started a new proxy to take over");
                        pending = Some(Pending { proxy, asked });
                    }
                    Err(reason) => {
                        tracing::warn!("upgrade refused: {reason}");
                        reply(asked, &UpgradeAnswer::Refused { reason }).await;
                    }
                }
            }
        }
    }
}

/// The control socket in `dir`, only for the supervisor's user.
fn listen(dir: &Path) -> Result<UnixListener, SuperviseError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).map_err(io(format!("--dir {}", dir.display())))?;
    // Its binaries and sockets are the proxy's user's alone, whatever made the directory
    // (an emptyDir is world-writable).
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("--dir {}", dir.display())))?;
    let path = control_socket(dir);
    // A supervisor's socket outlives it when it is killed.
    if path.exists() {
        std::fs::remove_file(&path).map_err(io(format!("{}", path.display())))?;
    }
    let listener = UnixListener::bind(&path).map_err(io(format!("{}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("{}", path.display())))?;
    Ok(listener)
}

/// Starts `binary run <args> --handover-socket <dir>/handover.sock`.
fn start(binary: &Path, settings: &Settings, sha256: String) -> Result<Proxy, SuperviseError> {
    let child = Command::new(binary)
        .arg("run")
        .args(&settings.run_args)
        .arg("--handover-socket")
        .arg(handover_socket(&settings.dir))
        .stdin(Stdio::null())
        .spawn()
        .map_err(io(format!("starting {}", binary.display())))?;
    let pid = child.id().unwrap_or_default();
    Ok(Proxy {
        child,
        pid,
        sha256,
        binary: binary.to_path_buf(),
    })
}

/// Reads the request, installs the binary it names and starts it; the error is the
/// reason given back.
async fn begin(asked: &mut UnixStream, settings: &Settings) -> Result<Proxy, String> {
    let cred = asked.peer_cred().map_err(|e| e.to_string())?;
    let ours = rustix::process::geteuid().as_raw();
    if cred.uid() != ours && cred.uid() != 0 {
        return Err(format!(
            "uid {} may not upgrade this proxy; only its user ({ours}) or root",
            cred.uid()
        ));
    }
    let mut line = String::new();
    let mut reader = BufReader::new(&mut *asked).take(MAX_REQUEST);
    match tokio::time::timeout(REQUEST_WAIT, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Err("no request line within 5 s".to_owned()),
    }
    let request: UpgradeRequest =
        serde_json::from_str(&line).map_err(|e| format!("a request that does not parse: {e}"))?;
    let dir = binaries(&settings.dir);
    let binary = request.binary.clone();
    let sha256 = request.sha256.clone();
    // Hashing a 20 MB binary is I/O and CPU: off the supervisor's only thread.
    let installed = tokio::task::spawn_blocking(move || install(&binary, &dir, sha256.as_deref()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (path, digest) = installed;
    start(&path, settings, digest).map_err(|e| e.to_string())
}

async fn new_exits(pending: &mut Option<Pending>) -> std::io::Result<ExitStatus> {
    match pending {
        Some(p) => p.proxy.child.wait().await,
        None => std::future::pending().await,
    }
}

/// Removes the binaries installed before `keep`: a running process keeps its own file
/// open, and a pod's volume should not grow by a binary per upgrade.
fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn forward(signal: Signal, current: &Proxy, pending: &Option<Pending>) {
    let pids = std::iter::once(current.pid).chain(pending.as_ref().map(|p| p.proxy.pid));
    for pid in pids {
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

async fn reply(mut asked: UnixStream, answer: &UpgradeAnswer) {
    if let Ok(mut line) = serde_json::to_vec(answer) {
        line.push(b'\n');
        let _ = asked.write_all(&line).await;
        let _ = asked.shutdown().await;
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
