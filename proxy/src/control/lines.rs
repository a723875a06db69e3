//! Splits the config stream's body into lines.
//!
//! A config for a large mesh is megabytes of JSON on one line and arrives in many HTTP/2
//! DATA frames; a frame may also end one line and start the next. The splitter keeps
//! what it has already searched so a long line costs one pass, and bounds a line so a
//! broken or hostile peer cannot make the proxy buffer without limit.

use bytes::{Bytes, BytesMut};

/// The default bound on one line: far above any real config, far below a pod's memory.
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// A line longer than the bound.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a config line exceeds {limit} bytes")]
pub struct LineTooLong {
    /// The bound.
    pub limit: usize,
}

/// Collects chunks and yields complete lines (without the `\n`, or a `\r\n`).
#[derive(Debug)]
pub struct LineSplitter {
    buf: BytesMut,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
    limit: usize,
}

impl LineSplitter {
    /// A splitter refusing lines longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            limit,
        }
    }

    /// Adds a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, if one has arrived. Empty lines (heartbeats) are returned
    /// too; the caller skips them.
    pub fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        let Some(offset) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.limit {
                return Err(LineTooLong { limit: self.limit });
            }
            return Ok(None);
        };
        let end = self.scanned + offset;
        self.scanned = 0;
        if end > self.limit {
            return Err(LineTooLong { limit: self.limit });
        }
        let mut line = self.buf.split_to(end + 1);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        Ok(Some(line.freeze()))
    }

    /// Bytes received after the last complete line (a line cut off by the end of the
    /// stream).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut LineSplitter) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = s.next_line().unwrap() {
            out.push(String::from_utf8(line.to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_and_several_per_chunk() {
        let mut s = LineSplitter::new(MAX_LINE);
        s.push(b"{\"a\":");
        assert!(drain(&mut s).is_empty());
        s.push(b"1}\n\n{\"b\"");
        assert_eq!(drain(&mut s), ["{\"a\":1}", ""]);
        s.push(b":2}\r\n{\"c\":3}\n");
        assert_eq!(drain(&mut s), ["{\"b\":2}", "{\"c\":3}"]);
        assert_eq!(s.pending(), 0);
        s.push(b"{\"cut");
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.pending(), 5);
    }

    #[test]
    fn a_megabyte_line_in_small_chunks() {
        let line = "x".repeat(3 * 1024 * 1024 + 17);
        let mut s = LineSplitter::new(MAX_LINE);
        let mut got = Vec::new();
        for chunk in format!("{line}\n\n{line}\n").as_bytes().chunks(16 * 1024) {
            s.push(chunk);
            got.extend(drain(&mut s));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], line);
        assert_eq!(got[1], "");
        assert_eq!(got[2], line);
    }

    #[test]
    fn lines_over_the_limit_are_refused() {
        let mut s = LineSplitter::new(8);
        s.push(b"12345678\n");
        assert_eq!(drain(&mut s), ["12345678"]);
        s.push(b"123456789\n");
        assert_eq!(s.next_line(), Err(LineTooLong { limit: 8 }));

        // Without a newline in sight, too.
        let mut s = LineSplitter::new(8);
        s.push(b"12345");
        assert_eq!(s.next_line(), Ok(None));
        s.push(b"6789");
        assert_eq!(s.next_line(), Err(LineTooLong { limit: 8 }));
    }
}
