//! Sending and receiving [`wire`](super::wire) frames, descriptors included, over a Unix
//! stream socket.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use super::wire::{HEADER_LEN, Header, MAX_FDS, Message, WireError};

/// A frame as received.
#[derive(Debug)]
pub struct Frame {
    /// Its message.
    pub message: Message,
    /// Its payload.
    pub payload: Vec<u8>,
    /// The descriptors that came with it, now this process's.
    pub fds: Vec<OwnedFd>,
}

/// Why a frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed.
    #[error("handover socket: {0}")]
    Io(#[from] std::io::Error),
    /// The frame is not one braid sends.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer closed the socket at a frame boundary.
    #[error("the handover peer closed the socket")]
    Closed,
    /// The header counted descriptors that did not arrive (the receiver is out of file
    /// descriptors, or the peer is not a braid proxy).
    #[error("the handover frame said {said} descriptors and {got} arrived")]
    MissingFds {
        /// What the header said.
        said: u32,
        /// What arrived.
        got: usize,
    },
    /// More descriptors than one frame carries.
    #[error("{0} descriptors do not fit one handover frame (at most 250)")]
    TooManyFds(usize),
}

/// Sends `message` with `payload` and `fds` (duplicated into the peer, not given away).
pub async fn send(
    stream: &mut UnixStream,
    message: &Message,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), FrameError> {
    if fds.len() > MAX_FDS as usize {
        return Err(FrameError::TooManyFds(fds.len()));
    }
    let json = message.encode()?;
    let length = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let header = Header {
        message: length(json.len()),
        payload: length(payload.len()),
        fds: length(fds.len()),
    }
    .encode();
    // The descriptors ride with the header's first byte; a short write sends the rest of
    // the header plainly.
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() {
                control.push(SendAncillaryMessage::ScmRights(fds));
            }
            rustix::net::sendmsg(
                &*stream,
                &[IoSlice::new(&header)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(std::io::Error::from)
        })
        .await?;
    stream.write_all(&header[sent..]).await?;
    stream.write_all(&json).await?;
    stream.write_all(payload).await?;
    stream.flush().await?;
    Ok(())
}

/// Receives the next frame.
pub async fn recv(stream: &mut UnixStream) -> Result<Frame, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    let mut space =
        vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS as usize))];
    while got < HEADER_LEN {
        let (n, truncated) = stream
            .async_io(Interest::READABLE, || {
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = rustix::net::recvmsg(
                    &*stream,
                    &mut [IoSliceMut::new(&mut header[got..])],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = m {
                        fds.extend(received);
                    }
                }
                Ok((msg.bytes, msg.flags.contains(ReturnFlags::CTRUNC)))
            })
            .await?;
        if n == 0 {
            return Err(match got {
                0 => FrameError::Closed,
                _ => std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into(),
            });
        }
        if truncated {
            tracing::warn!("handover descriptors were cut short (out of file descriptors?)");
        }
        got += n;
    }
    let header = Header::decode(header)?;
    if fds.len() != header.fds as usize {
        return Err(FrameError::MissingFds {
            said: header.fds,
            got: fds.len(),
        });
    }
    let mut json = vec![0; header.message as usize];
    stream.read_exact(&mut json).await?;
    let mut payload = vec![0; header.payload as usize];
    stream.read_exact(&mut payload).await?;
    Ok(Frame {
        message: Message::decode(&json)?,
        payload,
        fds,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    #[tokio::test]
    async fn frames_carry_descriptors_that_work_in_the_receiver() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut left, right) = std::os::unix::net::UnixStream::pair().unwrap();
        send(
            &mut a,
            &Message::Ready,
            b"read ahead",
            &[listener.as_fd(), right.as_fd()],
        )
        .await
        .unwrap();
        send(&mut a, &Message::Done, b"", &[]).await.unwrap();
        drop(listener);
        drop(right);

        let frame = recv(&mut b).await.unwrap();
        assert!(matches!(frame.message, Message::Ready));
        assert_eq!(frame.payload, b"read ahead");
        assert_eq!(frame.fds.len(), 2);
        let mut fds = frame.fds.into_iter();
        // The listening socket still listens, now through the received descriptor.
        let listener = std::net::TcpListener::from(fds.next().unwrap());
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.accept().unwrap();
        // So does the connected one.
        let mut right = std::os::unix::net::UnixStream::from(fds.next().unwrap());
        left.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        right.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");

        assert!(matches!(recv(&mut b).await.unwrap().message, Message::Done));
        drop(a);
        assert!(matches!(recv(&mut b).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn a_header_that_counts_missing_descriptors_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let json = Message::Ready.encode().unwrap();
        let header = Header {
            message: json.len() as u32,
            payload: 0,
            fds: 1,
        };
        a.write_all(&header.encode()).await.unwrap();
        a.write_all(&json).await.unwrap();
        let err = recv(&mut b).await.unwrap_err();
        assert!(
            matches!(err, FrameError::MissingFds { said: 1, got: 0 }),
            "{err}"
        );
    }
}
