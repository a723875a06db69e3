//! Property tests of the chunked decoder against a reference: a plain reader of RFC 9112
//! §7.1 that sees the whole body at once, sharing no code with the byte-at-a-time state
//! machine in `chunked.rs`. Where a chunked body ends is where the next message starts,
//! so the two must agree: for generated bodies (sizes in either case and with leading
//! zeros, extensions, trailers), fed in pieces split anywhere, the decoder ends exactly
//! where the encoding does; for mutated ones it refuses, or ends where the reference
//! does, and never claims an end past the bytes it was given. It keeps no buffer: its
//! whole state is one small value, whatever it reads (bounded memory).
//!
//! The reference is lenient only where no reader can end a body elsewhere: an extension
//! after `;` may hold any bytes but CR and LF, as may a trailer field's value, and
//! whitespace may end a size line.

use proptest::prelude::*;

use super::*;
use crate::props::{CASE_LIMIT, config, terminates};

/// Where a body ends, read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// After this many bytes.
    At(usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a chunked body.
    Refused,
}

/// One CRLF-terminated line from `at`: its content and where the next line starts.
fn line(body: &[u8], at: usize) -> Result<(&[u8], usize), End> {
    let rest = &body[at..];
    let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Err(End::Incomplete);
    };
    match (rest[end], rest.get(end + 1)) {
        (b'\r', Some(b'\n')) => Ok((&rest[..end], at + end + 2)),
        (b'\r', None) => Err(End::Incomplete),
        // A bare CR or LF.
        _ => Err(End::Refused),
    }
}

/// The reference: RFC 9112 §7.1's grammar, read top-down over the whole body.
fn reference(body: &[u8]) -> End {
    let mut at = 0;
    loop {
        let (size_line, next) = match line(body, at) {
            Ok(found) => found,
            Err(end) => return end,
        };
        let digits = size_line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(size_line.len());
        if digits == 0 {
            return End::Refused;
        }
        // What follows the size: nothing, or whitespace, then an extension or the end.
        let rest = &size_line[digits..];
        let after_ws = rest
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(rest.len());
        if !(after_ws == rest.len() || rest[after_ws] == b';') {
            return End::Refused;
        }
        let mut size: u64 = 0;
        for &d in &size_line[..digits] {
            let digit = u64::from((d as char).to_digit(16).unwrap_or(0));
            match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                Some(s) => size = s,
                None => return End::Refused,
            }
        }
        at = next;
        if size == 0 {
            // Trailer lines, then the empty line.
            loop {
                match line(body, at) {
                    Ok((trailer, next)) => {
                        at = next;
                        if trailer.is_empty() {
                            return End::At(at);
                        }
                        // RFC 9112 §7.1.2: each trailer line is a field line,
                        // `field-name ":" field-value`, the name a token.
                        let name_len = trailer
                            .iter()
                            .take_while(|&&b| {
                                b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
                            })
                            .count();
                        if name_len == 0 || trailer.get(name_len) != Some(&b':') {
                            return End::Refused;
                        }
                    }
                    Err(end) => return end,
                }
            }
        }
        let data_end = usize::try_from(size)
            .ok()
            .and_then(|s| at.checked_add(s))
            .filter(|&end| end <= body.len());
        let Some(data_end) = data_end else {
            return End::Incomplete;
        };
        at = data_end;
        match &body[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [] | [b'\r'] => return End::Incomplete,
            _ => return End::Refused,
        }
    }
}

/// Feeds `body` to a decoder in the pieces `cuts` makes; where it ended. Checks on the
/// way that no feed claims more bytes than it was given.
fn decode(body: &[u8], cuts: &[prop::sample::Index]) -> Result<End, TestCaseError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
    points.push(0);
    points.push(body.len());
    points.sort_unstable();
    let mut decoder = Chunked::default();
    for piece in points.windows(2) {
        let bytes = &body[piece[0]..piece[1]];
        match decoder.feed(bytes) {
            Ok(Some(n)) => {
                prop_assert!(
                    n <= bytes.len(),
                    "ended {n} bytes into a feed of {}",
                    bytes.len()
                );
                return Ok(End::At(piece[0] + n));
            }
            Ok(None) => {}
            Err(ChunkError) => return Ok(End::Refused),
        }
    }
    Ok(End::Incomplete)
}

/// Bytes that proptest prints as a byte string.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// One chunk's size line as written: case, leading zeros, extension.
fn size_line(size: usize, upper: bool, zeros: usize, ext: &str) -> String {
    let hex = if upper {
        format!("{size:X}")
    } else {
        format!("{size:x}")
    };
    format!("{}{hex}{ext}\r\n", "0".repeat(zeros))
}

fn extension() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "",
        "",
        "",
        ";a",
        ";a=b",
        ";name=\"q;\\\"x\"",
        " ;a",
        "\t;a=1",
        ";",
        "; a = b",
        ";a;b=c",
        " ",
    ])
}

/// A valid chunked body, encoded.
fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..48),
        any::<bool>(),
        0usize..3,
        extension(),
    );
    let trailer = prop::sample::select(vec![
        "grpc-status: 0",
        "grpc-message: x",
        "x:",
        "a: b\tc",
        "chunked: 0\r",
    ]);
    (
        prop::collection::vec(chunk, 0..6),
        1usize..4,
        extension(),
        prop::collection::vec(trailer, 0..3),
    )
        .prop_map(|(chunks, last_zeros, last_ext, trailers)| {
            let mut body = Vec::new();
            for (data, upper, zeros, ext) in chunks {
                body.extend_from_slice(size_line(data.len(), upper, zeros, ext).as_bytes());
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("{}{last_ext}\r\n", "0".repeat(last_zeros)).as_bytes());
            for t in trailers {
                // A trailer with a CR of its own is the mutation's job, not this one's.
                body.extend_from_slice(t.trim_end_matches('\r').as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            body
        })
}

/// A change at a position (modulo the length).
#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"\r\n \t;0fFgx=\"\x00\xff".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), byte).prop_map(|(at, b)| Mutation::Replace(at, b)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = body.len().max(1);
        match *m {
            Mutation::Insert(at, b) => body.insert(at % (body.len() + 1), b),
            Mutation::Delete(at) if !body.is_empty() => {
                body.remove(at % len);
            }
            Mutation::Replace(at, b) if !body.is_empty() => body[at % len] = b,
            Mutation::Truncate(at) => body.truncate(at % len),
            _ => {}
        }
    }
    body
}

/// What follows a body on the connection: the next message.
const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

proptest! {
    #![proptest_config(config(1))]

    /// A valid body ends exactly where its encoding does, however its bytes arrive.
    #[test]
    fn a_body_ends_where_its_encoding_does(
        body in chunked_body(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        terminates(CASE_LIMIT, move || -> Result<(), TestCaseError> {
            let len = body.len();
            let mut stream = body;
            stream.extend_from_slice(NEXT);
            prop_assert_eq!(reference(&stream), End::At(len), "the reference misreads it");
            prop_assert_eq!(decode(&stream, &cuts)?, End::At(len));
            prop_assert_eq!(decode(&stream[..len - 1], &cuts)?, End::Incomplete);
            Ok(())
        })?;
    }

    /// A mutated body is refused, or ends where the reference says, the same however
    /// its bytes arrive; the decoder never reads on past a body that ended.
    #[test]
    fn a_mutated_body_ends_where_the_reference_says_or_is_refused(
        body in chunked_body(),
        mutations in prop::collection::vec(mutation(), 1..4),
        next in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        terminates(CASE_LIMIT, move || -> Result<(), TestCaseError> {
            let mut stream = mutate(body, &mutations);
            if next {
                stream.extend_from_slice(NEXT);
            }
            let whole = decode(&stream, &[])?;
            let pieces = decode(&stream, &cuts)?;
            let want = reference(&stream);
            let context = format!("b\"{}\": decoder {pieces:?}, reference {want:?}", stream.escape_ascii());
            prop_assert_eq!(whole, pieces, "depends on the reads: {}", context);
            match (pieces, want) {
                (End::At(n), End::At(m)) => prop_assert_eq!(n, m, "{}", context),
                (End::At(_), _) => return Err(TestCaseError::fail(format!("ends early: {context}"))),
                (_, End::At(_)) => return Err(TestCaseError::fail(format!("reads past the end: {context}"))),
                // Refusing is safe; waiting for bytes the reference already refuses
                // only delays the refusal.
                (End::Refused | End::Incomplete, _) => {}
            }
            Ok(())
        })?;
    }

    /// Whatever the bytes, the decoder neither panics nor claims bytes it was not given.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512).prop_map(Bytes),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        terminates(CASE_LIMIT, move || decode(&bytes.0, &cuts).map(drop))?;
    }
}

#[test]
fn the_decoder_holds_no_buffer() {
    // Its whole state: an enum with a u64 in it. No input makes it allocate.
    assert!(std::mem::size_of::<Chunked>() <= 24);
}

#[test]
fn the_reference_reads_the_rfcs_examples() {
    assert_eq!(reference(b"5\r\nhello\r\n0\r\n\r\nX"), End::At(15));
    assert_eq!(
        reference(b"5;a=b\r\nhello\r\n0\r\nt: 1\r\n\r\n"),
        End::At(25)
    );
    assert_eq!(reference(b"5\r\nhello\r\n0\r\n"), End::Incomplete);
    assert_eq!(reference(b"5\nhello\r\n0\r\n\r\n"), End::Refused);
    assert_eq!(reference(b"5 5\r\nhello\r\n0\r\n\r\n"), End::Refused);
    assert_eq!(reference(b"5\r\nhelloX\r\n0\r\n\r\n"), End::Refused);
    assert_eq!(reference(b"FFFFFFFFFFFFFFFFF\r\n"), End::Refused);
}
