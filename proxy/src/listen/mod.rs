//! Listening sockets and the original destination of redirected connections.

mod original_dst;

pub use original_dst::original_dst;

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Binds a listener with `SO_REUSEADDR` (quick restarts); IPv6 sockets are v6-only so an
/// IPv4 listener on the same port can coexist.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Turns Nagle's algorithm off on an accepted connection. With it on, a response written
/// in pieces (HTTP/2 frames, a chunked body, headers then body) waits after its first
/// piece for the peer's delayed ACK: 40 ms on Linux, on every such response. Every
/// upstream connection has it off too (`Pool::connect_tcp`).
pub fn nodelay(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}
