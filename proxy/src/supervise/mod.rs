//! `braid-proxy supervise`: the container's main process in a pod (or a service's on a
//! host), running the proxy as its child and replacing that child in place when told to
//! (`braid-proxy upgrade`), as Envoy's and MOSN's hot restart do. The kubelet (or
//! systemd) sees one process throughout; the proxies hand their sockets and connections
//! to each other through the handover socket (`handover`).
//!
//! - [`request`]: what `upgrade` asks and what it is answered;
//! - [`digest`]: installing a binary only if its SHA-256 is the one expected;
//! - [`supervisor`]: the process that runs the children;
//! - [`upgrade`]: the command that asks it.

pub mod digest;
pub mod request;
pub mod supervisor;
pub mod upgrade;

use std::path::{Path, PathBuf};

/// The handover socket in a supervisor's directory.
pub fn handover_socket(dir: &Path) -> PathBuf {
    dir.join("handover.sock")
}

/// The control socket in a supervisor's directory, where `upgrade` asks.
pub fn control_socket(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Where the supervisor keeps the binaries it installed.
pub fn binaries(dir: &Path) -> PathBuf {
    dir.join("bin")
}
