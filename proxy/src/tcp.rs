//! Opaque TCP: copy bytes both ways, passing each side's half-close to the other.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::io::PrefixedIo;

mod duplex;

pub use duplex::{Carried, Copied, copy_both_ways, copy_both_ways_until};

/// Copies between the client (with any bytes already read for detection) and `upstream`
/// until both directions are done, or nothing moved either way for `idle`
/// ([`std::io::ErrorKind::TimedOut`]). Returns (client → upstream, upstream → client)
/// bytes.
pub async fn splice<C, U>(
    mut client: PrefixedIo<C>,
    mut upstream: U,
    idle: std::time::Duration,
) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let never = std::future::pending();
    match splice_until(&mut client, &mut upstream, idle, never, Carried::default()).await? {
        Copied::Done(up, down) => Ok((up, down)),
        // A pending future never pauses it.
        Copied::Paused { .. } => Err(std::io::ErrorKind::Interrupted.into()),
    }
}

/// [`splice`] on borrowed streams, paused once `pause` completes while both directions
/// are open: then what was read and not yet written comes back (client → upstream as
/// `to_b`), and both streams are the caller's again (to hand over). `carried` is what a
/// predecessor proxy had read and not written (client → upstream as `to_b`).
pub async fn splice_until<C, U>(
    client: &mut PrefixedIo<C>,
    upstream: &mut U,
    idle: std::time::Duration,
    pause: impl std::future::Future<Output = ()>,
    carried: Carried,
) -> std::io::Result<Copied>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let prefix = client.take_prefix();
    if !prefix.is_empty() {
        tokio::time::timeout(idle, upstream.write_all(&prefix))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
    Ok(
        match copy_both_ways_until(client, upstream, idle, pause, carried).await? {
            Copied::Done(up, down) => Copied::Done(up + prefix.len() as u64, down),
            paused => paused,
        },
    )
}
