//! The running proxy's side: it offers its listeners, config and identity to a successor
//! that connects to the handover socket; once the successor accepts on them, the running
//! proxy stops accepting and hands its connections over as they come free.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, FrameError};
use super::listeners::Listeners;
use super::wire::{Message, Offer, Role, Spoken, VERSION};
use super::{HandoverError, identity};
use crate::identity::IdentityStore;
use crate::tables::TableStore;

/// How long a successor has to say hello once connected.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// How long a successor has to accept on everything once offered: it applies the config
/// handed over (a large mesh's takes a second or two) and binds the listeners. Longer
/// than the successor's own deadline (60 s), so a successor gives up (and exits) before
/// this proxy stops waiting for it: never do both serve.
const READY_WAIT: Duration = Duration::from_secs(90);
/// How long handing one connection over may take before the successor is taken for gone.
const SEND_WAIT: Duration = Duration::from_secs(5);
/// Connections queued for the successor before a connection task waits to hand its own.
const QUEUE: usize = 256;

/// What a running proxy offers.
#[derive(Clone)]
pub struct Offered {
    /// Its listeners.
    pub listeners: Arc<Listeners>,
    /// Its config.
    pub config: Arc<TableStore>,
    /// Its mesh identity.
    pub identity: Arc<IdentityStore>,
}

/// What is handed over as it comes free.
pub enum Handed {
    /// A connection between requests: the listener that accepted it, its socket, and the
    /// bytes read from it and not yet used.
    Connection {
        /// How the successor serves it.
        role: Role,
        /// What it speaks.
        spoken: Spoken,
        /// Its socket.
        fd: OwnedFd,
        /// Read, not yet used.
        read: bytes::Bytes,
    },
    /// An opaque TCP tunnel: both sockets, and what was read from each and not yet
    /// written to the other.
    Tunnel {
        /// Which listener accepted the client's connection.
        role: Role,
        /// The client's socket.
        client: OwnedFd,
        /// The upstream's.
        upstream: OwnedFd,
        /// Read from the client, for the upstream.
        to_upstream: Vec<u8>,
        /// Read from the upstream, for the client.
        to_client: Vec<u8>,
    },
}

/// Where connections go once a successor took over: one, shared by every connection.
/// Until then (and when the proxy stops rather than upgrades) there is nowhere, and
/// connections close as they come free.
#[derive(Clone, Default)]
pub struct HandOff {
    tx: Arc<Mutex<Option<mpsc::Sender<Handed>>>>,
    /// Whether `tx` is set: read on the request path, so not behind the lock.
    on: Arc<std::sync::atomic::AtomicBool>,
}

impl HandOff {
    fn sender(&self) -> Option<mpsc::Sender<Handed>> {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Hands `conn` to the successor; gives it back when there is none, or the successor
    /// went away, so the caller closes it.
    pub async fn hand(&self, conn: Handed) -> Result<(), Handed> {
        match self.sender() {
            Some(tx) => tx.send(conn).await.map_err(|e| e.0),
            None => Err(conn),
        }
    }

    /// Whether connections are handed over rather than closed.
    pub fn is_on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::Acquire)
    }

    /// No more connections: the successor is told this proxy is done once those queued
    /// have gone.
    pub fn close(&self) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.on.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// A successor that took the listeners over.
pub struct Successor {
    stream: UnixStream,
    /// Its process id.
    pub pid: u32,
}

impl Successor {
    /// Turns `hand_off` on: each connection handed to it goes to the successor, until it
    /// is closed; then the successor is told `Done`. Connections the successor cannot
    /// take are closed (logged).
    pub fn forward(self, hand_off: &HandOff) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = mpsc::channel::<Handed>(QUEUE);
        *hand_off.tx.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        hand_off
            .on
            .store(true, std::sync::atomic::Ordering::Release);
        let mut stream = self.stream;
        tokio::spawn(async move {
            while let Some(handed) = rx.recv().await {
                let sent = match handed {
                    Handed::Connection {
                        role,
                        spoken,
                        fd,
                        read,
                    } => {
                        let message = Message::Connection { role, spoken };
                        let fds = [fd.as_fd()];
                        let send = frame::send(&mut stream, &message, &read, &fds);
                        timed(SEND_WAIT, "it to take a connection", send).await
                    }
                    Handed::Tunnel {
                        role,
                        client,
                        upstream,
                        mut to_upstream,
                        to_client,
                    } => {
                        let message = Message::Tunnel {
                            role,
                            to_upstream: u32::try_from(to_upstream.len()).unwrap_or(u32::MAX),
                        };
                        to_upstream.extend_from_slice(&to_client);
                        let fds = [client.as_fd(), upstream.as_fd()];
                        let send = frame::send(&mut stream, &message, &to_upstream, &fds);
                        timed(SEND_WAIT, "it to take a tunnel", send).await
                    }
                };
                if let Err(e) = sent {
                    // Those still to come are given back to their connections, which close.
                    tracing::warn!(error = %e, "the successor took no more connections; closing the rest");
                    rx.close();
                    return;
                }
            }
            let done = frame::send(&mut stream, &Message::Done, &[], &[]);
            let _ = timed(SEND_WAIT, "it to hear done", done).await;
        })
    }
}

/// Offers to successors on `unix` until one takes over (returned) or `stop` fires. A
/// successor that fails part-way changes nothing: this proxy never stopped accepting.
pub async fn offer(
    unix: UnixListener,
    offered: Offered,
    stop: CancellationToken,
) -> Option<Successor> {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            a = unix.accept() => a,
        };
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "handover socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match negotiate(&mut stream, &unix, &offered).await {
            Ok(pid) => {
                tracing::info!(
                    successor = pid,
                    "a successor took the listeners over: no longer accepting; handing connections over"
                );
                return Some(Successor { stream, pid });
            }
            Err(e) => tracing::warn!(error = %e, "a successor's takeover failed; still serving"),
        }
    }
}

/// Only the proxy's own user (or root) may take its sockets and its private key, or
/// hand its own over.
pub(super) fn check_peer(stream: &UnixStream) -> Result<(), HandoverError> {
    let cred = stream.peer_cred()?;
    let ours = rustix::process::geteuid().as_raw();
    if cred.uid() != ours && cred.uid() != 0 {
        return Err(HandoverError::Stranger {
            uid: cred.uid(),
            ours,
        });
    }
    Ok(())
}

async fn negotiate(
    stream: &mut UnixStream,
    unix: &UnixListener,
    offered: &Offered,
) -> Result<u32, HandoverError> {
    check_peer(stream)?;
    let hello = timed(HELLO_WAIT, "its hello", frame::recv(stream)).await?;
    let (version, pid) = match hello.message {
        Message::Hello { version, pid } => (version, pid),
        other => return Err(HandoverError::unexpected("hello", &other)),
    };
    if version != VERSION {
        let reason = format!("handover protocol {version}; this proxy speaks {VERSION}");
        let _ = frame::send(stream, &Message::Refused { reason }, &[], &[]).await;
        return Err(HandoverError::Version {
            theirs: version,
            ours: VERSION,
        });
    }
    let open = offered.listeners.snapshot()?;
    let config = offered
        .config
        .is_loaded()
        .then(|| (*offered.config.tables().config).clone());
    let identity = offered.identity.current().map(|c| identity::pass(&c));
    let endpoints = offered
        .config
        .with_tables(|t| t.carried_balancing(std::time::Instant::now()));
    let offer = Offer {
        version: VERSION,
        listeners: open.iter().map(|(entry, _)| entry.clone()).collect(),
        config,
        identity,
        endpoints,
        handover_socket: true,
    };
    let fds: Vec<BorrowedFd<'_>> = open
        .iter()
        .map(|(_, fd)| fd.as_fd())
        .chain(std::iter::once(unix.as_fd()))
        .collect();
    tracing::info!(
        successor = pid,
        listeners = open.len(),
        "offering the listeners to a successor"
    );
    frame::send(stream, &Message::Offer(Box::new(offer)), &[], &fds).await?;
    let ready = timed(READY_WAIT, "it to accept", frame::recv(stream)).await?;
    match ready.message {
        Message::Ready => Ok(pid),
        other => Err(HandoverError::unexpected("ready", &other)),
    }
}

/// `fut`, or [`HandoverError::Timeout`] naming what was awaited.
pub(super) async fn timed<T>(
    wait: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, FrameError>>,
) -> Result<T, HandoverError> {
    match tokio::time::timeout(wait, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(HandoverError::Timeout {
            waiting: what,
            secs: wait.as_secs(),
        }),
    }
}
