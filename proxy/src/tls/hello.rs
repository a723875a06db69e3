//! On a Permissive or Strict port: does a connection that opens with a TLS record carry
//! braid's mTLS (a ClientHello offering a `braid/` ALPN), or an app's own TLS, which goes
//! to the app untouched? The ClientHello is parsed by rustls and replayed afterwards.

use std::time::Duration;

use bytes::BytesMut;
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Alpn;

/// A ClientHello larger than this is not a proxy's.
const MAX_HELLO: usize = 16 * 1024;

/// What a connection's ClientHello says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Another braid proxy, originating mTLS.
    Mesh,
    /// Anything else: an app's TLS, a malformed or incomplete hello.
    Other,
}

/// Reads into `buf` (whose bytes the caller must replay) until the ClientHello is
/// complete, and classifies it. Silence past `timeout`, or a hello over 16 KiB, is
/// [`Hello::Other`].
pub async fn read_client_hello<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    timeout: Duration,
) -> std::io::Result<Hello> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(hello) = classify(buf) {
            return Ok(hello);
        }
        if buf.len() >= MAX_HELLO {
            return Ok(Hello::Other);
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_) | Ok(Ok(0)) => return Ok(Hello::Other),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// The verdict on `bytes`, or `None` while the hello is incomplete.
fn classify(bytes: &[u8]) -> Option<Hello> {
    let mut acceptor = Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(Hello::Other),
        }
    }
    match acceptor.accept() {
        Ok(None) => None,
        Ok(Some(accepted)) => {
            let mesh = accepted
                .client_hello()
                .alpn()
                .is_some_and(|mut offered| offered.any(|p| Alpn::from_wire(p).is_some()));
            Some(if mesh { Hello::Mesh } else { Hello::Other })
        }
        Err(_) => Some(Hello::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first flight of a rustls client offering `alpn`.
    fn client_hello(alpn: &[&[u8]]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from("payments.shop").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn tells_braids_hello_from_an_apps() {
        assert_eq!(
            classify(&client_hello(&[Alpn::Http2.wire()])),
            Some(Hello::Mesh)
        );
        assert_eq!(classify(&client_hello(&[b"h2"])), Some(Hello::Other));
        assert_eq!(classify(&client_hello(&[])), Some(Hello::Other));
        let hello = client_hello(&[Alpn::Tcp.wire()]);
        assert_eq!(classify(&hello[..hello.len() / 2]), None, "incomplete");
        assert_eq!(classify(b"\x16\x03\x01\x00\x05hello"), Some(Hello::Other));
    }

    #[tokio::test]
    async fn a_hello_in_pieces_is_read_whole() {
        use tokio::io::AsyncWriteExt;
        let hello = client_hello(&[Alpn::Http1.wire()]);
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let sent = hello.clone();
        tokio::spawn(async move {
            for piece in sent.chunks(100) {
                server.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let mut buf = BytesMut::new();
        let found = read_client_hello(&mut client, &mut buf, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(found, Hello::Mesh);
        assert_eq!(&buf[..], &hello[..]);
    }
}
