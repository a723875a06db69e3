//! `braid-proxy wait-ready`: blocks until the local proxy answers `/ready` with 200, so a
//! `postStart` hook holds the app back until its proxy can carry traffic.

use std::net::SocketAddr;
use std::time::Duration;

use super::admin_get;

/// Whether the proxy at `admin` is ready now.
pub async fn is_ready(admin: SocketAddr) -> bool {
    matches!(admin_get(admin, "/ready").await, Some((200, _)))
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
