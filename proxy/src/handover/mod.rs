//! Hitless upgrade: a running proxy hands what it serves with to a successor started
//! beside it, so a new proxy binary takes over without restarting the pod and without
//! failing a request.
//!
//! The running proxy listens on a Unix socket (`--handover-socket`, in a directory only
//! the pod's proxy container shares). A proxy started with the same flag finds it there
//! ([`take::start`]) and receives over it, as `SCM_RIGHTS` descriptors, every listening
//! socket (capture, explicit, admin, health, and the handover socket itself), with the
//! config and the mesh identity in force ([`offer::offer`]). Both accept on the same
//! sockets for a moment, so no connection is refused; once the successor accepts on all
//! of them it says so, and the predecessor stops accepting, finishes what is in flight
//! and hands over each connection that comes free ([`offer::HandOff`]), then exits.
//!
//! - [`wire`]: the messages and their framing;
//! - [`frame`]: frames with descriptors over a Unix socket;
//! - [`listeners`]: the registry of open listeners, and claiming those handed over;
//! - [`identity`]: the mesh identity as it crosses;
//! - [`offer`] and [`take`]: the two sides.

pub mod frame;
mod identity;
pub mod listeners;
pub mod offer;
pub mod take;
pub mod wire;

pub use listeners::{Listeners, Registration};
pub use offer::{HandOff, Handed, Offered, Successor, offer};
pub use take::{Predecessor, Received, Start, start};
pub use wire::{Role, Spoken};

use std::path::PathBuf;

use crate::identity::CertifiedError;

/// Why a takeover failed. On either side, the running proxy keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The handover socket could not be used.
    #[error("--handover-socket {path}: {source}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    /// A socket operation failed.
    #[error("handover: {0}")]
    Io(#[from] std::io::Error),
    /// The peer took too long.
    #[error("handover: no answer within {secs} s waiting for {waiting}")]
    Timeout {
        /// What was awaited.
        waiting: &'static str,
        /// How long.
        secs: u64,
    },
    /// The peer said something out of turn.
    #[error("handover: expected {expected}, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// The peers speak different protocol versions.
    #[error("handover: the successor speaks protocol {theirs}, this proxy {ours}")]
    Version {
        /// The successor's.
        theirs: u32,
        /// This proxy's.
        ours: u32,
    },
    /// The running proxy refused.
    #[error("the running proxy refused the takeover: {0}")]
    Refused(String),
    /// A process of another user connected.
    #[error(
        "handover: a process of uid {uid} connected; only this proxy's user ({ours}) or root may take it over"
    )]
    Stranger {
        /// Its uid.
        uid: u32,
        /// This proxy's.
        ours: u32,
    },
    /// The identity handed over does not check out.
    #[error("handover: {0}")]
    Identity(#[from] CertifiedError),
}

impl HandoverError {
    fn unexpected(expected: &'static str, got: &wire::Message) -> Self {
        let got = match got {
            wire::Message::Hello { .. } => "hello",
            wire::Message::Offer(_) => "offer",
            wire::Message::Ready => "ready",
            wire::Message::Connection { .. } => "connection",
            wire::Message::Tunnel { .. } => "tunnel",
            wire::Message::Done => "done",
            wire::Message::Refused { .. } => "refused",
        };
        Self::Unexpected {
            expected,
            got: got.to_owned(),
        }
    }
}
