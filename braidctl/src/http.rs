//! HTTP/1.1 GETs to admin ports (the operator's, a proxy's) over whatever carries them
//! (a socket, a port-forward), and how their answers are read.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Why an admin port gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing answered in time, or the connection failed.
    #[error("{target}: {message}")]
    Unreachable {
        /// Where.
        target: String,
        /// What failed.
        message: String,
    },
    /// It answered with an error status.
    #[error("{target}{path} answered {status}: {body}")]
    Status {
        /// Where.
        target: String,
        /// What was asked.
        path: String,
        /// The status.
        status: http::StatusCode,
        /// The start of the body (the reason).
        body: String,
    },
    /// The answer is not the JSON expected.
    #[error("{target}{path}: unexpected answer: {message}")]
    Decode {
        /// Where.
        target: String,
        /// What was asked.
        path: String,
        /// What did not fit.
        message: String,
    },
}

/// `GET path` over `io`, a connection to `target` (named `host`); the body of a 2xx
/// answer.
pub async fn get_over<IO>(io: IO, host: &str, target: &str, path: &str) -> Result<Bytes, HttpError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let unreachable = |message: String| HttpError::Unreachable {
        target: target.to_owned(),
        message,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("braidctl/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    answer(target, path, resp).await
}

/// What `exchange` gives, or an error naming `target` once `timeout` has passed.
pub async fn within(
    target: &str,
    timeout: Duration,
    exchange: impl Future<Output = Result<Bytes, HttpError>>,
) -> Result<Bytes, HttpError> {
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(HttpError::Unreachable {
                target: target.to_owned(),
                message: format!("no answer within {timeout:?}"),
            })
        })
}

/// The body of `resp`, `target`'s answer to `GET path`, when its status is 2xx.
pub async fn answer<B>(
    target: &str,
    path: &str,
    resp: http::Response<B>,
) -> Result<Bytes, HttpError>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| HttpError::Unreachable {
            target: target.to_owned(),
            message: e.to_string(),
        })?
        .to_bytes();
    if status.is_success() {
        return Ok(body);
    }
    let text = String::from_utf8_lossy(&body);
    Err(HttpError::Status {
        target: target.to_owned(),
        path: path.to_owned(),
        status,
        body: text.trim().chars().take(500).collect(),
    })
}

/// `body`, the answer from `target` to `GET path`, decoded from JSON.
pub fn decode<T: serde::de::DeserializeOwned>(
    target: String,
    path: &str,
    body: &[u8],
) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| HttpError::Decode {
        target,
        path: path.to_owned(),
        message: e.to_string(),
    })
}
