//! Opaque TCP: copy bytes both ways, passing each side's half-close to the other.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::io::PrefixedIo;

mod duplex;

pub use duplex::copy_both_ways;

/// Copies between the client (with any bytes already read for detection) and `upstream`
/// until both directions are done, or nothing moved either way for `idle`
/// ([`std::io::ErrorKind::TimedOut`]). Returns (client → upstream, upstream → client)
/// bytes.
pub async fn splice<C, U>(
    client: PrefixedIo<C>,
    mut upstream: U,
    idle: std::time::Duration,
) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (prefix, mut client) = client.into_parts();
    if !prefix.is_empty() {
        tokio::time::timeout(idle, upstream.write_all(&prefix))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
    let (up, down) = copy_both_ways(&mut client, &mut upstream, idle).await?;
    Ok((up + prefix.len() as u64, down))
}
