//! The proxy's part in the pod's life: holding the app back until the proxy is ready
//! (`wait-ready`, a `postStart` hook) and, on termination, serving the app until it has
//! exited (`wait-app-exit`, a `preStop` hook). Both are only needed when the proxy is an
//! ordinary container; native sidecars get this ordering from the kubelet.

pub mod app_exit;
pub mod wait_app_exit;
pub mod wait_ready;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest admin answer the hooks read.
const MAX_ANSWER: u64 = 64 * 1024;

/// `GET path` on the local proxy's admin port: the status code and body, or `None` when
/// the proxy does not answer within a second (not running, or not yet listening).
pub(crate) async fn admin_get(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .ok()?;
        Some(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()??;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
