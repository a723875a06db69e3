//! Taking the TCP socket out from under a stream, to hand a connection to a successor
//! proxy between requests (`handover`).

use tokio::net::TcpStream;

use super::{Counted, PrefixedIo};

/// A stream that may stand on a TCP socket another process can go on serving.
pub trait Detach: Sized {
    /// Whether [`Detach::detach`] would give the socket: nothing above it holds state a
    /// successor would need. TLS does (its session keys live in this process).
    fn detachable(&self) -> bool;

    /// The socket, with the bytes read from it and not yet used; `None` when not
    /// [`Detach::detachable`].
    fn detach(self) -> Option<(TcpStream, bytes::Bytes)>;
}

impl Detach for TcpStream {
    fn detachable(&self) -> bool {
        true
    }

    fn detach(self) -> Option<(TcpStream, bytes::Bytes)> {
        Some((self, bytes::Bytes::new()))
    }
}

impl<T: Detach> Detach for Counted<T> {
    fn detachable(&self) -> bool {
        self.inner().detachable()
    }

    fn detach(self) -> Option<(TcpStream, bytes::Bytes)> {
        self.into_inner().detach()
    }
}

impl<T: Detach> Detach for PrefixedIo<T> {
    fn detachable(&self) -> bool {
        self.inner().detachable()
    }

    fn detach(self) -> Option<(TcpStream, bytes::Bytes)> {
        let (prefix, inner) = self.into_parts();
        let (socket, read) = inner.detach()?;
        if read.is_empty() {
            return Some((socket, prefix));
        }
        let mut both = bytes::BytesMut::from(&prefix[..]);
        both.extend_from_slice(&read);
        Some((socket, both.freeze()))
    }
}

impl<L: Detach, R: Detach> Detach for tokio_util::either::Either<L, R> {
    fn detachable(&self) -> bool {
        match self {
            Self::Left(l) => l.detachable(),
            Self::Right(r) => r.detachable(),
        }
    }

    fn detach(self) -> Option<(TcpStream, bytes::Bytes)> {
        match self {
            Self::Left(l) => l.detach(),
            Self::Right(r) => r.detach(),
        }
    }
}

impl<T> Detach for tokio_rustls::client::TlsStream<T> {
    fn detachable(&self) -> bool {
        false
    }

    fn detach(self) -> Option<(TcpStream, bytes::Bytes)> {
        None
    }
}

impl<T> Detach for tokio_rustls::server::TlsStream<T> {
    fn detachable(&self) -> bool {
        false
    }

    fn detach(self) -> Option<(TcpStream, bytes::Bytes)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn unread_bytes_come_out_with_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let wrapped = PrefixedIo::new(&b"GET / "[..], server);
        assert!(wrapped.detachable());
        let (mut socket, read) = wrapped.detach().unwrap();
        assert_eq!(&read[..], b"GET / ");
        client.write_all(b"HTTP/1.1").await.unwrap();
        let mut rest = [0u8; 8];
        socket.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"HTTP/1.1");
    }
}
