//! Stream wrappers: one with bytes read but not yet taken, replayed before the rest
//! (here: the first bytes read for protocol detection, or a read ahead), and one that
//! counts its bytes (`counted.rs`), and one whose writes are gathered once per turn of
//! its task (`coalesce.rs`).

mod coalesce;
mod counted;
mod detach;

pub(crate) use coalesce::Coalesced;
pub use counted::{ByteCounters, Counted};
pub use detach::Detach;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most a read-ahead takes from the socket at once.
const READ_AHEAD: usize = 64 * 1024;

/// `prefix` then `inner`, as one stream; writes go straight to `inner`.
#[derive(Debug)]
pub struct PrefixedIo<T> {
    prefix: Bytes,
    inner: T,
    /// Whether each read from `inner` takes all it can (up to 64 KiB) into `prefix`.
    read_ahead: bool,
}

/// A stream read ahead: each read from the socket takes all it can (up to 64 KiB) and
/// serves the caller's smaller reads from memory.
///
/// Why: h2's frame reader asks for 8 KiB at a time. An upstream HTTP/2 connection that
/// carries a hundred callers' answers then took them seven per read (0.40 reads per
/// request under h2load through one proxy; 0.22 read ahead).
pub type ReadAhead<T> = PrefixedIo<T>;

/// The stream an HTTP/2 connection (served or upstream) runs on: read ahead, and its
/// writes gathered once per turn of its task.
pub(crate) fn for_h2<T: AsyncWrite + Unpin>(io: T) -> Coalesced<ReadAhead<T>> {
    Coalesced::new(ReadAhead::read_ahead(io))
}

impl<T> PrefixedIo<T> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: impl Into<Bytes>, inner: T) -> Self {
        Self {
            prefix: prefix.into(),
            inner,
            read_ahead: false,
        }
    }

    /// Reads `inner` ahead (see [`ReadAhead`]).
    pub fn read_ahead(inner: T) -> Self {
        Self {
            prefix: Bytes::new(),
            inner,
            read_ahead: true,
        }
    }

    /// The stream behind the bytes.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The bytes not yet replayed.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Takes the bytes not yet replayed; reads go straight to the stream after.
    pub fn take_prefix(&mut self) -> Bytes {
        std::mem::take(&mut self.prefix)
    }

    /// The bytes not yet replayed and the stream behind them.
    pub fn into_parts(self) -> (Bytes, T) {
        (self.prefix, self.inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.prefix.is_empty() {
            // A caller asking for as much as the read-ahead needs no copy through it.
            if !this.read_ahead || buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Allocated for this read only (an idle connection holds nothing), and not
            // zeroed: the read fills what it uses.
            let mut ahead = BytesMut::with_capacity(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut ahead) {
                Poll::Ready(Ok(_)) => this.prefix = ahead.freeze(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // An emptied `Bytes` still holds its allocation (a read-ahead's 64 KiB): let
            // it go, so an idle connection holds nothing.
            this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_one() {
        let (mut far, near) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        far.write_all(&data).await.unwrap();
        drop(far);
        let mut io = ReadAhead::read_ahead(near);
        let mut small = [0u8; 100];
        let n = io.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], &data[..n]);
        // The first read took all the read-ahead holds.
        assert_eq!(io.prefix().len(), READ_AHEAD - n);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!([&small[..n], &rest[..]].concat(), data);
        // Drained: the read-ahead's buffer went with its last byte (a static empty
        // `Bytes` points at no allocation).
        assert_eq!(io.prefix().as_ptr(), Bytes::new().as_ptr());
    }

    #[tokio::test]
    async fn replays_the_prefix_first() {
        let mut io = PrefixedIo::new(Bytes::from_static(b"GET "), &b"/ HTTP/1.1\r\n"[..]);
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "GET / HTTP/1.1\r\n");
    }
}
