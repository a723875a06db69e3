//! A stream whose writes are gathered and sent once per turn of its task, for HTTP/2
//! connections.
//!
//! Why: h2 flushes every DATA frame over 256 bytes on its own, so an HTTP/2 connection
//! carrying a hundred callers made about one `writev` per answer (29% of the proxy's
//! CPU under h2load through one proxy). Here a flush only arms a write: the task wakes
//! itself and the write happens when it next runs, after the other ready tasks (the
//! streams handing over their answers) had their turn. Everything gathered by then
//! goes in one write.
//!
//! When the gathered bytes go out: on the task's next read (h2 reads on every turn of
//! its connection task), on a write that would take the buffer past [`HIGH_WATER`],
//! on shutdown, and (as far as the socket takes them) when the stream is dropped
//! without one (hyper drops a connection it gave up on without shutting it down). A
//! flush that arms wakes the task, so the next turn comes.
//!
//! Only for a stream whose task reads it on every turn, as h2's connection task does: a
//! flush returns before the bytes are written, so a writer that never reads would stall.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes gathered before a write waits for them to go out.
const HIGH_WATER: usize = 256 * 1024;

/// A write this large, with nothing gathered, goes straight out: copying it would cost
/// more than the write it saves.
const PASS_THROUGH: usize = 16 * 1024;

/// The buffer an emptied stream keeps; a larger one (after a burst) is let go, so an idle
/// connection holds little.
const KEEP: usize = 16 * 1024;

/// `inner`, its writes gathered and sent once per turn of its task (see the module).
#[derive(Debug)]
pub struct Coalesced<T: AsyncWrite + Unpin> {
    inner: T,
    pending: BytesMut,
    /// Whether a flush was asked for and the task woken to do it.
    armed: bool,
    /// Whether `pending` grew past [`KEEP`] (draining hides how large its allocation is).
    grown: bool,
    /// A write error met while draining on a read: the read goes on (the peer's last
    /// bytes, a response before a reset, are still delivered) and the next write or flush
    /// reports it.
    failed: Option<io::Error>,
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Gathers `inner`'s writes.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: BytesMut::new(),
            armed: false,
            grown: false,
            failed: None,
        }
    }

    /// The error a drain on a read met, if any: reported once, on a write or flush.
    fn take_failure(&mut self) -> io::Result<()> {
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Writes out everything gathered, then flushes `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(n);
        }
        if self.grown {
            self.pending = BytesMut::new();
            self.grown = false;
        }
        self.armed = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<T: AsyncWrite + Unpin> Drop for Coalesced<T> {
    fn drop(&mut self) {
        // Dropped without a shutdown (hyper ends some connections so): what h2 took for
        // flushed goes out as far as the socket takes it now, as it would have without
        // gathering. No waker: nothing will poll again.
        if self.armed && self.failed.is_none() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.poll_drain(&mut cx);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.armed && this.failed.is_none() {
            // A full socket leaves the bytes for later (its waker is registered); the
            // read goes on, so a peer that writes before it reads is not deadlocked.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                this.armed = false;
                this.failed = Some(e);
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.take_failure()?;
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.pending.len() + len > HIGH_WATER {
            std::task::ready!(this.poll_drain(cx))?;
        }
        if this.pending.is_empty() && len >= PASS_THROUGH {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.pending.extend_from_slice(b);
        }
        this.grown |= this.pending.len() > KEEP;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        // Gathering copies the slices into one buffer, so many small ones cost nothing
        // extra: h2 then hands DATA frames over without copying them first.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.take_failure()?;
        if this.pending.is_empty() {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.armed {
            this.armed = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// A socket that records each write it takes, and takes none while `full`.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        full: bool,
        broken: bool,
        shut: bool,
    }

    /// A socket whose bytes the test still sees after the stream is dropped.
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.broken {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.full {
                return Poll::Pending;
            }
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Counts how often the task was woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(io: &mut Coalesced<Socket>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<usize> {
        Pin::new(io).poll_write(cx, bytes).map(|r| r.unwrap())
    }

    fn flush(io: &mut Coalesced<Socket>, cx: &mut Context<'_>) {
        assert!(Pin::new(io).poll_flush(cx).is_ready());
    }

    fn read(io: &mut Coalesced<Socket>, cx: &mut Context<'_>) {
        let mut space = [0u8; 16];
        let _ = Pin::new(io).poll_read(cx, &mut ReadBuf::new(&mut space));
    }

    #[test]
    fn frames_flushed_in_one_turn_go_out_in_one_write_on_the_next() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesced::new(Socket::default());
        // As h2 does for three answers: a frame, a flush, each time.
        for frame in [&b"one "[..], b"two ", b"three"] {
            assert_eq!(write(&mut io, &mut cx, frame), Poll::Ready(frame.len()));
            flush(&mut io, &mut cx);
        }
        assert!(io.inner.writes.is_empty(), "nothing written in this turn");
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the task woken once, for its next turn"
        );
        // The next turn begins with a read.
        read(&mut io, &mut cx);
        assert_eq!(io.inner.writes, vec![b"one two three".to_vec()]);
        // Nothing gathered: a flush asks nothing more of the task.
        flush(&mut io, &mut cx);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stream_dropped_without_shutdown_sends_what_was_flushed() {
        let mut cx = Context::from_waker(Waker::noop());
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut io = Coalesced::new(Shared(written.clone()));
        let _ = Pin::new(&mut io).poll_write(&mut cx, b"RST_STREAM");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        drop(io);
        assert_eq!(*written.lock().unwrap(), b"RST_STREAM");
    }

    #[test]
    fn a_write_error_met_on_a_read_comes_back_on_the_next_write() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = Coalesced::new(Socket {
            broken: true,
            ..Socket::default()
        });
        let _ = write(&mut io, &mut cx, b"answer");
        flush(&mut io, &mut cx);
        // The read is not failed by the write's error...
        let mut space = [0u8; 16];
        let read = Pin::new(&mut io).poll_read(&mut cx, &mut ReadBuf::new(&mut space));
        assert!(read.is_pending());
        // ...the next write is.
        let next = Pin::new(&mut io).poll_write(&mut cx, b"more");
        assert!(matches!(next, Poll::Ready(Err(ref e)) if e.kind() == io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn shutdown_sends_what_was_gathered_first() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = Coalesced::new(Socket::default());
        let _ = write(&mut io, &mut cx, b"GOAWAY");
        flush(&mut io, &mut cx);
        assert!(Pin::new(&mut io).poll_shutdown(&mut cx).is_ready());
        assert_eq!(io.inner.writes, vec![b"GOAWAY".to_vec()]);
        assert!(io.inner.shut);
    }

    #[test]
    fn a_large_write_with_nothing_gathered_is_not_copied() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = Coalesced::new(Socket::default());
        let big = vec![7u8; PASS_THROUGH];
        assert_eq!(write(&mut io, &mut cx, &big), Poll::Ready(big.len()));
        assert_eq!(io.inner.writes, vec![big]);
        assert!(io.pending.is_empty());
    }

    #[test]
    fn a_full_socket_holds_writes_back_past_the_high_water_mark() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut io = Coalesced::new(Socket {
            full: true,
            ..Socket::default()
        });
        let chunk = vec![1u8; 1024];
        let mut taken = 0;
        while let Poll::Ready(n) = write(&mut io, &mut cx, &chunk) {
            taken += n;
            assert!(taken <= HIGH_WATER, "took {taken} bytes into a full socket");
        }
        assert_eq!(taken, HIGH_WATER);
        // A read goes on while the socket is full (a peer that writes before it reads
        // is not deadlocked), and what was gathered waits.
        flush(&mut io, &mut cx);
        read(&mut io, &mut cx);
        assert_eq!(io.pending.len(), HIGH_WATER);
        // Room again: the next turn sends it all, and the large buffer is let go.
        io.inner.full = false;
        read(&mut io, &mut cx);
        assert_eq!(io.inner.writes.concat().len(), HIGH_WATER);
        assert_eq!(io.pending.capacity(), 0, "the large buffer is let go");
    }
}
