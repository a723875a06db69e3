//! A stream that counts the bytes read from it and written to it, as they move: a
//! long-lived connection (a database pool's) shows its traffic while it is open, not
//! only when it closes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a connection's bytes are counted.
#[derive(Clone, Debug, Default)]
pub struct ByteCounters {
    /// Bytes read from the connection.
    pub read: Counter,
    /// Bytes written to it.
    pub written: Counter,
}

/// `inner`, its bytes counted in `counters`.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    counters: ByteCounters,
}

impl<T> Counted<T> {
    /// Counts `inner`'s bytes in `counters`.
    pub fn new(inner: T, counters: ByteCounters) -> Self {
        Self { inner, counters }
    }

    /// The stream counted.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The stream counted, no longer counted.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.counters.read.inc_by(n as u64);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counters.written.inc_by(n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.counters.written.inc_by(n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_are_counted_as_they_move() {
        let (a, mut b) = tokio::io::duplex(64);
        let counters = ByteCounters::default();
        let mut counted = Counted::new(a, counters.clone());
        counted.write_all(b"hello").await.unwrap();
        assert_eq!(counters.written.get(), 5);
        b.write_all(b"answer!").await.unwrap();
        let mut buf = [0u8; 16];
        let n = counted.read(&mut buf).await.unwrap();
        assert_eq!((n, counters.read.get()), (7, 7));
        assert_eq!(counters.written.get(), 5);
    }
}
