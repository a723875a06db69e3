//! Protocol detection: one bounded read with a deadline. The client's first bytes say
//! HTTP/2 (the connection preface), HTTP/1 (a request line) or TLS (a ClientHello);
//! anything else — including silence, as with server-speaks-first protocols such as
//! MySQL or SMTP — is opaque TCP once the deadline passes.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface.
    Http2,
    /// A TLS ClientHello.
    Tls,
    /// Anything else, or nothing before the deadline.
    Opaque,
}

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// The most bytes detection ever needs.
const MAX_PEEK: usize = H2_PREFACE.len();

/// Classifies `bytes`; `None` while more bytes could change the answer.
pub fn classify(bytes: &[u8]) -> Option<Detected> {
    if bytes.is_empty() {
        return None;
    }
    if bytes[0] == 0x16 {
        // A TLS record: content type handshake, then major version 3.
        return match bytes.get(1) {
            None => None,
            Some(0x03) => Some(Detected::Tls),
            Some(_) => Some(Detected::Opaque),
        };
    }
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        return if bytes.len() >= H2_PREFACE.len() {
            Some(Detected::Http2)
        } else {
            None
        };
    }
    let mut could_be_method = false;
    for m in METHODS {
        let n = bytes.len().min(m.len());
        if bytes[..n] == m[..n] {
            if bytes.len() >= m.len() {
                return Some(Detected::Http1);
            }
            could_be_method = true;
        }
    }
    if could_be_method {
        None
    } else {
        Some(Detected::Opaque)
    }
}

/// Reads until the protocol is known; returns it with the bytes read (after those
/// already in `buf`), which the caller must replay (see [`crate::io::PrefixedIo`]).
///
/// Silence for `timeout` is opaque: a server-speaks-first protocol. Bytes that begin an
/// HTTP method, the HTTP/2 preface or a TLS record commit the client, though: it has
/// until `patience` from the start (the header-read timeout) to finish them, and then
/// the connection fails with [`std::io::ErrorKind::TimedOut`]. Never opaque: a request
/// written a byte at a time must not reach the app unparsed.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    mut buf: BytesMut,
    timeout: Duration,
    patience: Duration,
) -> std::io::Result<(Detected, BytesMut)> {
    buf.reserve(MAX_PEEK);
    let start = tokio::time::Instant::now();
    loop {
        if let Some(found) = classify(&buf) {
            return Ok((found, buf));
        }
        let deadline = if buf.is_empty() {
            start + timeout
        } else {
            start + patience.max(timeout)
        };
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_elapsed) if buf.is_empty() => return Ok((Detected::Opaque, buf)),
            Err(_elapsed) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the first bytes began a request that did not arrive within the \
                     header-read timeout",
                ));
            }
            Ok(Ok(0)) => return Ok((Detected::Opaque, buf)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"POST /x"), Some(Detected::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x01binary"), Some(Detected::Opaque));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Detected::Opaque));
        assert_eq!(classify(b"GETX"), Some(Detected::Opaque));
    }

    #[tokio::test]
    async fn silence_is_opaque_after_the_deadline() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (found, bytes) = detect(
            &mut client,
            BytesMut::new(),
            Duration::from_millis(50),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(found, Detected::Opaque);
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn split_request_lines_are_still_http() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            server.write_all(b"GE").await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            server.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
        });
        let (found, bytes) = detect(
            &mut client,
            BytesMut::new(),
            Duration::from_millis(5),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(found, Detected::Http1);
        assert!(bytes.starts_with(b"GET "));
    }

    // A client that writes `G`, pauses past the detection timeout, then the rest of a
    // request was taken as opaque TCP: the request reached the app unparsed.
    #[tokio::test(start_paused = true)]
    async fn a_begun_request_has_the_header_read_timeout_and_is_never_opaque() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            server.write_all(b"G").await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.write_all(b"ET / HTTP/1.1\r\n").await.unwrap();
            server
        });
        let timeout = Duration::from_millis(100);
        let patience = Duration::from_secs(10);
        let (found, _) = detect(&mut client, BytesMut::new(), timeout, patience)
            .await
            .unwrap();
        assert_eq!(found, Detected::Http1);
        // A prefix that never ends fails at the header-read timeout.
        let mut server = writer.await.unwrap();
        let (mut client, mut other) = tokio::io::duplex(64);
        other.write_all(b"PO").await.unwrap();
        let started = tokio::time::Instant::now();
        let e = detect(&mut client, BytesMut::new(), timeout, patience)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), patience);
        server.shutdown().await.unwrap();
    }
}
