//! Finds where a chunked body (RFC 9112 §7.1) ends, so the relay passes it on byte for
//! byte and knows when the connection is free for the next response. Pure.

/// A broken chunked body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed chunked body")]
pub struct ChunkError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: the size so far, whether a digit was seen, and whether an
    /// extension started.
    Size { size: u64, digits: bool, ext: bool },
    /// Whitespace after the size: more of it, an extension (`;`) or the line's end may
    /// follow, nothing else (`5 5` is no size a strict reader takes as 5).
    Bws(u64),
    /// After the size line's CR.
    SizeLf(u64),
    /// Chunk data still to come.
    Data(u64),
    /// The CR after the data.
    DataCr,
    /// The LF after the data.
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    /// In a trailer field's name.
    TrailerName,
    /// In a trailer field's value, after its colon.
    Trailer,
    /// After a trailer line's CR; `blank`: it was the final blank line.
    TrailerLf { blank: bool },
    /// The body ended.
    Done,
}

const NEW_SIZE: State = State::Size {
    size: 0,
    digits: false,
    ext: false,
};

/// Tracks a chunked body as its bytes pass.
#[derive(Clone, Debug)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Self { state: NEW_SIZE }
    }
}

impl Chunked {
    /// Reads `bytes`: `Some(n)` when the body ends after their first `n` bytes, `None`
    /// when all of them belong to it and more is to come.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Done {
                return Ok(Some(i));
            }
            if let State::Data(left) = self.state {
                // Skip the data in one step.
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                self.state = match left - take {
                    0 => State::DataCr,
                    rest => State::Data(rest),
                };
                continue;
            }
            self.state = step(self.state, bytes[i])?;
            i += 1;
        }
        Ok((self.state == State::Done).then_some(i))
    }
}

fn step(state: State, b: u8) -> Result<State, ChunkError> {
    Ok(match (state, b) {
        (
            State::Size {
                size, ext: false, ..
            },
            _,
        ) if b.is_ascii_hexdigit() => {
            let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
            let size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit))
                .ok_or(ChunkError)?;
            State::Size {
                size,
                digits: true,
                ext: false,
            }
        }
        (
            State::Size {
                size, digits: true, ..
            },
            b'\r',
        ) => State::SizeLf(size),
        // Extensions (`;name=value`), and whitespace before them, pass unread.
        (
            State::Size {
                size,
                digits: true,
                ext: false,
            },
            b' ' | b'\t',
        )
        | (State::Bws(size), b' ' | b'\t') => State::Bws(size),
        (State::Bws(size), b'\r') => State::SizeLf(size),
        (
            State::Size {
                size, digits: true, ..
            },
            b';',
        )
        | (State::Bws(size), b';') => State::Size {
            size,
            digits: true,
            ext: true,
        },
        (
            State::Size {
                size,
                digits: true,
                ext: true,
            },
            _,
        ) if b != b'\n' => State::Size {
            size,
            digits: true,
            ext: true,
        },
        (State::SizeLf(0), b'\n') => State::TrailerStart,
        (State::SizeLf(size), b'\n') => State::Data(size),
        (State::DataCr, b'\r') => State::DataLf,
        (State::DataLf, b'\n') => NEW_SIZE,
        (State::TrailerStart, b'\r') => State::TrailerLf { blank: true },
        // A trailer line is a field, `name: value`: a line that is not (a request line,
        // say) breaks the body, rather than pass to an upstream that skips trailers.
        (State::TrailerStart | State::TrailerName, _) if is_tchar(b) => State::TrailerName,
        (State::TrailerName, b':') => State::Trailer,
        (State::Trailer, b'\r') => State::TrailerLf { blank: false },
        (State::Trailer, b'\n') => return Err(ChunkError),
        (State::Trailer, _) => State::Trailer,
        (State::TrailerLf { blank: true }, b'\n') => State::Done,
        (State::TrailerLf { blank: false }, b'\n') => State::TrailerStart,
        _ => return Err(ChunkError),
    })
}

/// A token character (RFC 9110 §5.6.2), as a field name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; where it ended.
    fn end(body: &[u8], step: usize) -> Result<Option<usize>, ChunkError> {
        let mut c = Chunked::default();
        let mut at = 0;
        for piece in body.chunks(step) {
            if let Some(n) = c.feed(piece)? {
                return Ok(Some(at + n));
            }
            at += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_reads() {
        let body = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(end(body, step), Ok(Some(body.len() - 4)), "step {step}");
        }
    }

    #[test]
    fn trailers_are_part_of_the_body() {
        let body = b"2\r\nok\r\n0\r\ngrpc-status: 0\r\ngrpc-message: x\r\n\r\n";
        assert_eq!(end(body, 1), Ok(Some(body.len())));
        assert_eq!(end(&body[..body.len() - 1], 4), Ok(None));
    }

    #[test]
    fn broken_framing_is_an_error() {
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"0\r\nbad\nline\r\n\r\n",
            // Found by review: a request line among the trailers.
            b"0\r\nGET /x HTTP/1.1\r\n\r\n",
            b"0\r\n: no-name\r\n\r\n",
            b"0\r\nno-colon\r\n\r\n",
            b"FFFFFFFFFFFFFFFFF\r\n",
        ] {
            assert_eq!(end(bad, 3), Err(ChunkError), "{bad:?}");
        }
    }

    // Found by the property tests (`props`): whitespace after a size took whatever
    // followed as an extension, so `0 HTTP/1.1 200 OK` ended a body.
    #[test]
    fn after_whitespace_only_an_extension_or_the_line_end_may_follow() {
        for bad in [
            &b"5 5\r\nhello\r\n0\r\n\r\n"[..],
            b"0 HTTP/1.1 200 OK\r\n\r\n",
            b"5\t=\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(end(bad, 2), Err(ChunkError), "{bad:?}");
        }
        for good in [
            &b"5 ;a=b\r\nhello\r\n0\r\n\r\n"[..],
            b"5 \t \r\nhello\r\n0 ;x y\r\n\r\n",
        ] {
            assert_eq!(end(good, 2), Ok(Some(good.len())), "{good:?}");
        }
    }
}
