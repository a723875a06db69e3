//! A stream that reads ahead: each read from the socket takes all it can (up to 64 KiB)
//! and serves the caller's smaller reads from memory.
//!
//! Why: h2's frame reader asks for 8 KiB at a time. An upstream HTTP/2 connection that
//! carries a hundred callers' answers then takes them seven at a time, and between two
//! reads the answers already taken go out to their callers' connections, one write each.
//! Read at once, the answers for one caller's connection leave in one write: under load,
//! writes per request fell from one to a fraction (`make bench`'s HTTP/2 rows).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket at once.
const READ_AHEAD: usize = 64 * 1024;

/// `inner`, read ahead.
#[derive(Debug)]
pub struct ReadAhead<T> {
    inner: T,
    /// Read but not yet taken; empty, and holding no memory, while idle.
    buffered: BytesMut,
}

impl<T> ReadAhead<T> {
    /// Reads `inner` ahead.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buffered: BytesMut::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buffered.is_empty() {
            // A caller asking for as much as the read-ahead needs no copy through it.
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Allocated for this read only (an idle connection holds nothing), and not
            // zeroed: the read fills what it uses.
            let mut ahead = BytesMut::with_capacity(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut ahead) {
                Poll::Ready(Ok(_)) => this.buffered = ahead,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.buffered.len().min(buf.remaining());
        buf.put_slice(&this.buffered[..n]);
        this.buffered.advance(n);
        if this.buffered.is_empty() {
            this.buffered = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
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
        let mut io = ReadAhead::new(near);
        let mut small = [0u8; 100];
        let n = io.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], &data[..n]);
        // The first read took all the read-ahead holds.
        assert_eq!(io.buffered.len(), READ_AHEAD - n);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!([&small[..n], &rest[..]].concat(), data);
        // Drained: no memory held.
        assert_eq!(io.buffered.capacity(), 0);
    }
}
