//! Copying both ways without a buffer per idle connection. `copy_bidirectional` holds
//! two 8 KiB buffers for a connection's whole life: 10,000 silent connections on a
//! detecting port took 230 MB. Here each read goes into one scratch buffer per worker
//! thread and is written on at once; only bytes the writer cannot take yet are kept,
//! and that buffer is given back once the reader has nothing more.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The scratch buffer's size: a read never takes more than this.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// One direction of the copy.
#[derive(Debug, Default)]
struct Half {
    /// Read but not yet written: empty (no allocation) unless the writer pushed back.
    pending: Vec<u8>,
    /// How much of `pending` is written.
    at: usize,
    /// Written since the last flush.
    unflushed: bool,
    /// The reader reached its end; the writer is to be shut down.
    eof: bool,
    /// The writer is shut down: this direction is done.
    done: bool,
    /// Bytes copied.
    copied: u64,
}

impl Half {
    /// Copies from `r` to `w` until `r` ends (then shuts `w` down), or until neither can
    /// go on now.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.at < self.pending.len() {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.pending[self.at..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.at += n;
                self.copied += n as u64;
                self.unflushed = true;
            }
            self.pending.clear();
            self.at = 0;
            if self.eof {
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let read = SCRATCH_BUF.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut *r).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(self.write_through(cx, w, buf.filled()))),
                }
            });
            match read {
                Poll::Pending => {
                    // Nothing to read now: what was written goes out (a TLS writer
                    // buffers), and an idle direction holds no buffer.
                    if self.unflushed {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    self.pending = Vec::new();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(written)) => written?,
            }
        }
    }

    /// Writes `data` (just read) as far as `w` takes it now and keeps the rest; empty
    /// `data` is the reader's end.
    fn write_through<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
        data: &[u8],
    ) -> io::Result<()> {
        if data.is_empty() {
            self.eof = true;
            return Ok(());
        }
        let mut off = 0;
        while off < data.len() {
            match Pin::new(&mut *w).poll_write(cx, &data[off..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    off += n;
                    self.copied += n as u64;
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        self.pending.extend_from_slice(&data[off..]);
        Ok(())
    }
}

/// Copies between `a` and `b` both ways until both have ended, passing each side's end
/// on as a shutdown of the other's write side. Returns the bytes copied a → b and b → a;
/// the first error ends both, and so does `idle` with no byte copied either way
/// ([`io::ErrorKind::TimedOut`]).
pub async fn copy_both_ways<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match copy_both_ways_until(a, b, idle, std::future::pending(), Carried::default()).await? {
        Copied::Done(up, down) => Ok((up, down)),
        // A pending future never pauses it.
        Copied::Paused { .. } => Err(io::ErrorKind::Interrupted.into()),
    }
}

/// How a copy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Copied {
    /// Both ways ended: the bytes copied a → b and b → a.
    Done(u64, u64),
    /// Paused with both ways still open: what was read and not yet written, each way.
    Paused {
        /// Read from `a`, for `b`.
        to_b: Vec<u8>,
        /// Read from `b`, for `a`.
        to_a: Vec<u8>,
    },
}

/// Bytes read before the copy began and not yet written: those of a tunnel a
/// predecessor proxy paused.
#[derive(Debug, Default)]
pub struct Carried {
    /// For `b`.
    pub to_b: Vec<u8>,
    /// For `a`.
    pub to_a: Vec<u8>,
}

/// [`copy_both_ways`], paused once `pause` completes while neither way has ended (a
/// tunnel handed to a successor proxy goes on there); a tunnel half-closed by then runs
/// to its end here. `carried` bytes go first, written as each way's own pending bytes
/// are, while the other way keeps moving (written first and alone, a peer that reads
/// only once its own write is done would wait for ever).
pub async fn copy_both_ways_until<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    pause: impl Future<Output = ()>,
    carried: Carried,
) -> io::Result<Copied>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Half {
        pending: carried.to_b,
        ..Half::default()
    };
    let mut down = Half {
        pending: carried.to_a,
        ..Half::default()
    };
    let silent = tokio::time::sleep(idle);
    tokio::pin!(silent);
    tokio::pin!(pause);
    let mut paused = false;
    poll_fn(|cx| {
        if !paused && pause.as_mut().poll(cx).is_ready() {
            paused = true;
        }
        if paused && !up.eof && !down.eof {
            return Poll::Ready(Ok(Copied::Paused {
                to_b: up.pending.split_off(up.at),
                to_a: down.pending.split_off(down.at),
            }));
        }
        let before = up.copied + down.copied;
        // Each is polled (and so registers its wake-up) until it is done.
        if !up.done {
            let _ = up.poll_copy(cx, a, b)?;
        }
        if !down.done {
            let _ = down.poll_copy(cx, b, a)?;
        }
        if up.done && down.done {
            return Poll::Ready(Ok(Copied::Done(up.copied, down.copied)));
        }
        if up.copied + down.copied != before {
            silent.as_mut().reset(Instant::now() + idle);
        }
        match silent.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no bytes either way for {}",
                    humantime::format_duration(idle)
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Paused while the writer pushes back: what was read and not written comes back,
    // so nothing is lost between the bytes the far side got and those returned.
    #[tokio::test]
    async fn a_pause_returns_what_was_read_and_not_yet_written() {
        let (mut client, mut a) = tokio::io::duplex(64 * 1024);
        let (mut b, mut server) = tokio::io::duplex(100);
        let sent = pattern(50_000, 3);
        client.write_all(&sent).await.unwrap();
        let (go, paused) = tokio::sync::oneshot::channel::<()>();
        let copy = tokio::spawn(async move {
            let pause = async {
                let _ = paused.await;
            };
            let copied = copy_both_ways_until(
                &mut a,
                &mut b,
                Duration::from_secs(60),
                pause,
                Carried::default(),
            )
            .await;
            (copied, a, b)
        });
        // Let some through, then pause with the rest held back by the small pipe.
        let mut got = vec![0u8; 1000];
        server.read_exact(&mut got).await.unwrap();
        go.send(()).unwrap();
        let (copied, mut a, b) = copy.await.unwrap();
        let Copied::Paused { to_b, to_a } = copied.unwrap() else {
            panic!("not paused");
        };
        assert!(to_a.is_empty());
        drop(b);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        got.extend(rest);
        got.extend(to_b);
        // What the server got and what came back are a prefix of what was sent, in
        // order: the remainder was never read from the client.
        assert_eq!(&sent[..got.len()], &got[..]);
        // And the rest is still there to read, for whoever goes on.
        let mut unread = vec![0u8; sent.len() - got.len()];
        a.read_exact(&mut unread).await.unwrap();
        got.extend(unread);
        assert_eq!(got, sent);
        drop(client);
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    // Small pipes push back on every write, so bytes wait in `pending` and must come
    // out in order; each side's end reaches the other.
    #[tokio::test]
    async fn copies_both_ways_in_order_through_writers_that_push_back() {
        let (client, mut a) = tokio::io::duplex(100);
        let (mut b, server) = tokio::io::duplex(37);
        let copy =
            tokio::spawn(
                async move { copy_both_ways(&mut a, &mut b, Duration::from_secs(60)).await },
            );
        let up = pattern(300_000, 1);
        let down = pattern(200_000, 7);
        /// Writes `out` and ends it while reading all the other side sends.
        async fn talk(io: tokio::io::DuplexStream, out: Vec<u8>) -> Vec<u8> {
            let (mut r, mut w) = tokio::io::split(io);
            let write = async move {
                w.write_all(&out).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let ((), read) = tokio::join!(write, r.read_to_end(&mut got));
            read.unwrap();
            got
        }
        let client_side = tokio::spawn(talk(client, up.clone()));
        let server_side = tokio::spawn(talk(server, down.clone()));
        assert_eq!(server_side.await.unwrap(), up);
        assert_eq!(client_side.await.unwrap(), down);
        assert_eq!(
            copy.await.unwrap().unwrap(),
            (up.len() as u64, down.len() as u64)
        );
    }

    // One side's end is passed on while the other direction keeps going.
    #[tokio::test]
    async fn a_half_close_keeps_the_other_direction_open() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let copy =
            tokio::spawn(
                async move { copy_both_ways(&mut a, &mut b, Duration::from_secs(60)).await },
            );
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The server answers after the client's end.
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
        assert_eq!(copy.await.unwrap().unwrap(), (7, 6));
    }

    // Silence both ways for the idle time ends the copy; bytes either way restart it.
    #[tokio::test(start_paused = true)]
    async fn silence_both_ways_ends_the_copy() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(64);
        let started = Instant::now();
        let copy =
            tokio::spawn(
                async move { copy_both_ways(&mut a, &mut b, Duration::from_secs(10)).await },
            );
        tokio::time::sleep(Duration::from_secs(8)).await;
        server.write_all(b"banner").await.unwrap();
        let mut got = [0; 6];
        client.read_exact(&mut got).await.unwrap();
        let e = copy.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(18));
    }

    // A direction with nothing to read holds no buffer, even after its writer pushed
    // back.
    #[tokio::test]
    async fn an_idle_direction_holds_no_buffer() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, mut server) = tokio::io::duplex(8);
        let mut half = Half::default();
        client.write_all(&[1; 40]).await.unwrap();
        let polled = poll_fn(|cx| Poll::Ready(half.poll_copy(cx, &mut a, &mut b))).await;
        assert!(polled.is_pending());
        assert!(!half.pending.is_empty(), "the writer took 8 of 40 bytes");
        let mut got = vec![0; 40];
        let drain = tokio::spawn(async move {
            server.read_exact(&mut got).await.unwrap();
            got
        });
        poll_fn(|cx| match half.poll_copy(cx, &mut a, &mut b) {
            Poll::Pending if half.pending.capacity() == 0 => Poll::Ready(()),
            _ => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        assert_eq!(drain.await.unwrap(), vec![1; 40]);
        assert_eq!(half.copied, 40);
    }
}
