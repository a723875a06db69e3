//! braid's end-to-end harness: a mesh on one machine.
//!
//! Every pod is a network namespace with a veth on a bridge (the bridge lives in a "hub"
//! namespace of the mesh, so nothing touches the host's own network). A meshed pod gets
//! the init step — the real `braid-proxy iptables` command with the arguments the
//! injector writes — and the sidecar, run as UID 1337 with the injector's arguments and
//! environment, its config streamed from the real operator (directory source, in the hub
//! namespace), or from a file; apps run inside the namespace. Names resolve through
//! `/etc/netns/<pod>/hosts`. Everything is removed on drop, and namespaces left behind
//! by a killed run are swept by name prefix the next time a mesh is made.
//!
//! Needs root, `ip` (iproute2), `iptables`, `setpriv` (util-linux), `tcpdump` and
//! `openssl`.

pub mod grpc_health;
pub mod h2load;
pub mod handshakes;
pub mod keepalive;
mod mesh;
mod netns;
mod operator;
pub mod otlp;
pub mod prober;
pub mod shop;

pub use mesh::{Mesh, Pod, ProxyFlags};
pub use netns::{prerequisites, sweep, sweep_own};
pub use operator::{NAMESPACE, Operator};

/// Why the harness could not do something.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A prerequisite is missing.
    #[error("e2e prerequisite missing: {0}")]
    Missing(String),
    /// A command failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed or why it could not run.
        message: String,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Files.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
