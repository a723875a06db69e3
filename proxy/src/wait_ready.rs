//! `braid-proxy wait-ready`: blocks until the local proxy answers `/ready` with 200, so a
//! `postStart` hook holds the app back until its proxy can carry traffic.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the proxy at `admin` is ready now.
pub async fn is_ready(admin: SocketAddr) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(admin)).await
    else {
        return false;
    };
    let request = format!("GET /ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut head)).await,
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 200")
    )
}

/// Polls until ready or `timeout`; the error says what to check.
pub async fn wait(admin: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if is_ready(admin).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "braid-proxy at {admin} not ready after {}s: check its logs (kubectl logs <pod> -c braid-proxy) and GET {admin}/ready",
        timeout.as_secs()
    )
}
