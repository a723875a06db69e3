//! The proxy's listening sockets as a successor receives them: every listener is
//! registered while it is open, and a listener being bound first claims a socket handed
//! over for the same role and address.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;

use super::wire::{ListenerEntry, Role};

/// Every open listener, and those handed over and not yet claimed.
#[derive(Default)]
pub struct Listeners {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    open: Vec<(u64, ListenerEntry, OwnedFd)>,
    inherited: Vec<(ListenerEntry, OwnedFd)>,
}

/// Keeps a listener in the registry; dropped when the listener closes, so a successor is
/// never handed a socket its predecessor no longer serves.
pub struct Registration {
    id: u64,
    listeners: Arc<Listeners>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.listeners
            .lock()
            .open
            .retain(|(id, _, _)| *id != self.id);
    }
}

impl Listeners {
    /// The registry of a proxy that took over `inherited`.
    pub fn inheriting(inherited: Vec<(ListenerEntry, OwnedFd)>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                inherited,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A listener for `role` on `addr`: the predecessor's socket when it handed one over
    /// for the same role and the same `addr` (as asked, so a successor with the same flags
    /// and config finds it), else a new one bound with [`crate::listen::bind`].
    /// Registered until the [`Registration`] drops.
    pub fn bind(
        self: &Arc<Self>,
        role: Role,
        addr: SocketAddr,
    ) -> std::io::Result<(TcpListener, Registration)> {
        let entry = ListenerEntry { role, addr };
        let claimed = {
            let mut state = self.lock();
            let found = state.inherited.iter().position(|(e, _)| *e == entry);
            found.map(|i| state.inherited.swap_remove(i).1)
        };
        let listener = match claimed {
            Some(fd) => {
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true)?;
                tracing::info!(role = ?entry.role, %addr, "listening on the socket handed over");
                TcpListener::from_std(std)?
            }
            None => crate::listen::bind(addr)?,
        };
        let fd = listener.as_fd().try_clone_to_owned()?;
        let mut state = self.lock();
        state.next += 1;
        let id = state.next;
        state.open.push((id, entry, fd));
        Ok((
            listener,
            Registration {
                id,
                listeners: self.clone(),
            },
        ))
    }

    /// Closes the sockets handed over that no listener claimed (the successor's config or
    /// flags no longer have them): a socket nobody accepts on would leave callers hanging.
    pub fn close_unclaimed(&self) -> Vec<ListenerEntry> {
        let unclaimed = std::mem::take(&mut self.lock().inherited);
        unclaimed.into_iter().map(|(entry, _fd)| entry).collect()
    }

    /// Every open listener, with its own copy of the socket.
    pub fn snapshot(&self) -> std::io::Result<Vec<(ListenerEntry, OwnedFd)>> {
        self.lock()
            .open
            .iter()
            .map(|(_, entry, fd)| Ok((entry.clone(), fd.try_clone()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bind_claims_the_handed_over_socket_of_its_role_and_address() {
        let old = Arc::new(Listeners::default());
        let (admin, _admin_reg) = old
            .bind(Role::Admin, "127.0.0.1:0".parse().unwrap())
            .unwrap();
        let addr = admin.local_addr().unwrap();
        let (gone, gone_reg) = old
            .bind(Role::Health, "127.0.0.1:0".parse().unwrap())
            .unwrap();
        drop((gone, gone_reg));
        let handed = old.snapshot().unwrap();
        assert_eq!(handed.len(), 1, "a closed listener is not handed over");

        let new = Listeners::inheriting(handed);
        // Asked as the predecessor asked: a fresh bind would get another port.
        let (taken, _reg) = new
            .bind(Role::Admin, "127.0.0.1:0".parse().unwrap())
            .unwrap();
        assert_eq!(taken.local_addr().unwrap(), addr);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        taken.accept().await.unwrap();
        assert!(new.close_unclaimed().is_empty());
        assert_eq!(new.snapshot().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unclaimed_sockets_are_closed() {
        let old = Arc::new(Listeners::default());
        let (l, _reg) = old
            .bind(
                Role::Explicit {
                    name: "gone".into(),
                    side: crate::config::Side::Inbound,
                },
                "127.0.0.1:0".parse().unwrap(),
            )
            .unwrap();
        let addr = l.local_addr().unwrap();
        let new = Listeners::inheriting(old.snapshot().unwrap());
        drop((l, _reg, old));
        let closed = new.close_unclaimed();
        assert_eq!(closed.len(), 1);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
