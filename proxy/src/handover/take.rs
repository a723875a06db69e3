//! The successor's side: at start-up it asks the proxy running at the handover socket for
//! its listeners, config and identity, and once it accepts on them says so; then it serves
//! the connections the predecessor hands over as they come free.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UnixListener, UnixStream};

use super::frame::{self, FrameError};
use super::listeners::Listeners;
use super::offer::timed;
use super::wire::{Message, Role, Spoken, VERSION};
use super::{HandoverError, identity};
use crate::config::ProxyConfig;
use crate::identity::Certified;

/// How long the running proxy has to answer a hello with its offer.
const OFFER_WAIT: Duration = Duration::from_secs(30);

/// What a proxy starts with.
pub struct Start {
    /// Its listeners: those handed over are claimed as they are bound.
    pub listeners: Arc<Listeners>,
    /// The config the predecessor had in force.
    pub config: Option<ProxyConfig>,
    /// The identity the predecessor had in force.
    pub identity: Option<Certified>,
    /// What the predecessor knew of its endpoints.
    pub endpoints: Vec<crate::balance::carry::Carried>,
    /// Where this proxy offers to its own successor.
    pub offer_on: Option<UnixListener>,
    /// The proxy it takes over from, until told it accepts.
    pub predecessor: Option<Predecessor>,
}

/// The proxy being taken over from.
pub struct Predecessor {
    stream: UnixStream,
}

/// What the predecessor handed over.
pub enum Received {
    /// A connection between requests.
    Connection {
        /// How to serve it.
        role: Role,
        /// What it speaks.
        spoken: Spoken,
        /// The connection.
        stream: TcpStream,
        /// What the predecessor read from it and did not use.
        read: bytes::Bytes,
    },
    /// An opaque TCP tunnel, to go on splicing.
    Tunnel {
        /// Which listener accepted the client's connection.
        role: Role,
        /// The client's connection.
        client: TcpStream,
        /// The upstream's.
        upstream: TcpStream,
        /// Read from the client, for the upstream.
        to_upstream: bytes::Bytes,
        /// Read from the upstream, for the client.
        to_client: bytes::Bytes,
    },
}

fn tcp(fd: OwnedFd) -> std::io::Result<TcpStream> {
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true)?;
    TcpStream::from_std(std)
}

/// The connection in `fd`, or `None` (logged; only it is lost) when it cannot be used.
fn usable(fd: OwnedFd) -> Option<TcpStream> {
    tcp(fd)
        .inspect_err(|e| tracing::warn!(error = %e, "a connection handed over could not be used"))
        .ok()
}

impl Start {
    /// A proxy that neither takes over nor offers.
    pub fn alone() -> Self {
        Self {
            listeners: Arc::new(Listeners::default()),
            config: None,
            identity: None,
            endpoints: Vec::new(),
            offer_on: None,
            predecessor: None,
        }
    }
}

/// Takes over from the proxy offering at `path` if one runs there; else (no socket, or a
/// stale one) starts afresh and offers there.
pub async fn start(path: &Path) -> Result<Start, HandoverError> {
    let socket_err = |source| HandoverError::Socket {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fresh(path).map_err(socket_err);
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            // Left by a proxy that is gone.
            std::fs::remove_file(path).map_err(socket_err)?;
            return fresh(path).map_err(socket_err);
        }
        Err(e) => return Err(socket_err(e)),
    };
    // Whoever listens there hands over config and an identity: only this proxy's own
    // user (or root) is believed.
    super::offer::check_peer(&stream)?;
    let hello = Message::Hello {
        version: VERSION,
        pid: std::process::id(),
    };
    frame::send(&mut stream, &hello, &[], &[]).await?;
    let frame = timed(
        OFFER_WAIT,
        "the running proxy's offer",
        frame::recv(&mut stream),
    )
    .await?;
    let offer = match frame.message {
        Message::Offer(offer) => offer,
        Message::Refused { reason } => return Err(HandoverError::Refused(reason)),
        other => return Err(HandoverError::unexpected("offer", &other)),
    };
    let mut fds = frame.fds.into_iter();
    let inherited: Vec<_> = offer.listeners.iter().cloned().zip(fds.by_ref()).collect();
    if inherited.len() != offer.listeners.len() {
        return Err(FrameError::MissingFds {
            said: offer.listeners.len() as u32,
            got: inherited.len(),
        }
        .into());
    }
    let offer_on = match (offer.handover_socket, fds.next()) {
        (true, Some(fd)) => unix_listener(fd).map_err(socket_err)?,
        // An older predecessor that kept its socket: offer on a new one at the same path.
        _ => {
            let _ = std::fs::remove_file(path);
            fresh(path)
                .map_err(socket_err)?
                .offer_on
                .ok_or_else(|| socket_err(std::io::Error::other("no handover socket")))?
        }
    };
    let identity = match &offer.identity {
        Some(passed) => Some(identity::receive(passed)?),
        None => None,
    };
    tracing::info!(
        listeners = inherited.len(),
        config = offer.config.as_ref().map(|c| c.version.as_str()),
        identity = identity.as_ref().map(|c| c.identity.as_str()),
        "taking over from the proxy running at the handover socket"
    );
    Ok(Start {
        listeners: Listeners::inheriting(inherited),
        config: offer.config,
        identity,
        endpoints: offer.endpoints,
        offer_on: Some(offer_on),
        predecessor: Some(Predecessor { stream }),
    })
}

/// A new handover socket at `path`, only for the proxy's own user.
fn fresh(path: &Path) -> std::io::Result<Start> {
    use std::os::unix::fs::PermissionsExt as _;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Start {
        offer_on: Some(listener),
        ..Start::alone()
    })
}

fn unix_listener(fd: OwnedFd) -> std::io::Result<UnixListener> {
    let std = std::os::unix::net::UnixListener::from(fd);
    std.set_nonblocking(true)?;
    UnixListener::from_std(std)
}

impl Predecessor {
    /// Tells the predecessor this proxy accepts on every listener: it stops accepting.
    pub async fn say_ready(&mut self) -> Result<(), HandoverError> {
        frame::send(&mut self.stream, &Message::Ready, &[], &[]).await?;
        Ok(())
    }

    /// Hands each connection the predecessor passes to `serve` until it is done.
    pub async fn receive(mut self, serve: impl Fn(Received)) -> Result<(), HandoverError> {
        let mut handed = 0u64;
        loop {
            let frame = match frame::recv(&mut self.stream).await {
                Ok(frame) => frame,
                // Gone without a word (killed): its connections went with it.
                Err(FrameError::Closed) => break,
                Err(e) => return Err(e.into()),
            };
            match frame.message {
                Message::Connection { role, spoken } => {
                    let Some(stream) = frame.fds.into_iter().next().and_then(usable) else {
                        continue;
                    };
                    handed += 1;
                    serve(Received::Connection {
                        role,
                        spoken,
                        stream,
                        read: frame.payload.into(),
                    });
                }
                Message::Tunnel { role, to_upstream } => {
                    let mut fds = frame.fds.into_iter();
                    let (Some(client), Some(upstream)) =
                        (fds.next().and_then(usable), fds.next().and_then(usable))
                    else {
                        continue;
                    };
                    let mut payload = bytes::Bytes::from(frame.payload);
                    let split = (to_upstream as usize).min(payload.len());
                    let to_upstream = payload.split_to(split);
                    handed += 1;
                    serve(Received::Tunnel {
                        role,
                        client,
                        upstream,
                        to_upstream,
                        to_client: payload,
                    });
                }
                Message::Done => break,
                other => tracing::debug!(message = ?other, "ignoring a handover message"),
            }
        }
        tracing::info!(
            connections = handed,
            "the predecessor has handed everything over"
        );
        Ok(())
    }
}
