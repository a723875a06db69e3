//! Property tests of protocol detection. A client's first bytes arrive in reads of any
//! size, and `detect` classifies what it has after each one; so the answer must not
//! depend on where the reads split: once a prefix is classified, every longer input
//! says the same, and `detect` over any split returns what the whole input says, with
//! every byte it read handed back unchanged for replay. It never panics, never waits
//! for more than [`MAX_PEEK`] bytes (bounded memory), and never loops.

use proptest::prelude::*;

use super::*;
use crate::props::{CASE_LIMIT, config, terminates};

/// Serves `pieces` one read at a time, then end of stream.
struct Reads {
    pieces: std::collections::VecDeque<Vec<u8>>,
}

impl AsyncRead for Reads {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(mut piece) = self.pieces.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                piece.drain(..n);
                self.pieces.push_front(piece);
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// First bytes worth classifying: protocol openings, their prefixes and near misses,
/// and anything.
fn opening() -> impl Strategy<Value = Vec<u8>> {
    let known: Vec<&'static [u8]> = vec![
        H2_PREFACE,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
        b"PRI * HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01",
        b"\x16\x02",
        b"\x16",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"CONNECT db:5432 HTTP/1.1\r\n",
        b"PUTX",
        b"get / HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
    ];
    prop_oneof![
        3 => (prop::sample::select(known), any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(k, cut, tail)| {
                // A prefix of a known opening, maybe with other bytes after it.
                let mut bytes = k[..cut.index(k.len() + 1)].to_vec();
                bytes.extend(tail);
                bytes
            }),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn cuts() -> impl Strategy<Value = Vec<prop::sample::Index>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..6)
}

/// `bytes` cut at `cuts`, in order.
fn split(bytes: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .filter(|p| !p.is_empty())
        .collect()
}

proptest! {
    #![proptest_config(config(1))]

    /// Once a prefix is classified, every longer input says the same; an input of
    /// [`MAX_PEEK`] bytes is always classified.
    #[test]
    fn an_answer_never_changes_with_more_bytes(bytes in opening()) {
        terminates(CASE_LIMIT, move || -> Result<(), TestCaseError> {
            let mut first = None;
            for n in 0..=bytes.len() {
                let now = classify(&bytes[..n]);
                if n >= MAX_PEEK {
                    prop_assert!(now.is_some(), "{n} bytes not classified");
                }
                match (first, now) {
                    (None, found) => first = found,
                    (Some(before), now) => prop_assert_eq!(Some(before), now, "after {} bytes", n),
                }
            }
            Ok(())
        })?;
    }

    /// `detect` answers what the whole input says, however its reads split it, and
    /// hands back the bytes it read in order: a prefix of the input that decides.
    #[test]
    fn detection_does_not_depend_on_the_reads(bytes in opening(), cuts in cuts()) {
        terminates(CASE_LIMIT, move || -> Result<(), TestCaseError> {
            let pieces = split(&bytes, &cuts);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut reads = Reads { pieces: pieces.into() };
            let (found, read) = runtime
                .block_on(detect(&mut reads, BytesMut::new(), Duration::from_secs(5), Duration::from_secs(5)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            // At the end of the input, what is still undecided is opaque.
            prop_assert_eq!(found, classify(&bytes).unwrap_or(Detected::Opaque));
            prop_assert!(bytes.starts_with(&read), "bytes lost or reordered");
            // What it read decides, or it read everything there was.
            match classify(&read) {
                Some(answer) => prop_assert_eq!(answer, found),
                None => prop_assert_eq!(read.len(), bytes.len()),
            }
            Ok(())
        })?;
    }
}
