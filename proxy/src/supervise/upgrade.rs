//! `braid-proxy upgrade`: asks the supervisor in a directory to replace its proxy with
//! another binary, and waits for the outcome.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::control_socket;
use super::request::{UpgradeAnswer, UpgradeRequest};

/// Why the upgrade could not be asked for or its outcome not learnt.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// No supervisor answers in the directory.
    #[error("no braid-proxy supervise at {path} ({source}); is --dir the supervisor's directory?")]
    NoSupervisor {
        /// The control socket.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The binary cannot be named to the supervisor.
    #[error("--binary {path}: {source}")]
    Binary {
        /// The path given.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Talking to the supervisor failed.
    #[error("the supervisor: {0}")]
    Io(#[from] std::io::Error),
    /// The supervisor's answer does not parse, or never came.
    #[error("the supervisor gave no outcome within {0} s; see its log")]
    NoAnswer(u64),
}

/// Asks the supervisor in `dir` to run `binary` (of digest `sha256`, when given) instead
/// of its proxy, and waits up to `wait` for the outcome.
pub async fn upgrade(
    dir: &Path,
    binary: &Path,
    sha256: Option<String>,
    wait: Duration,
) -> Result<UpgradeAnswer, UpgradeError> {
    // The supervisor runs elsewhere: it gets an absolute path.
    let binary = std::fs::canonicalize(binary).map_err(|source| UpgradeError::Binary {
        path: binary.display().to_string(),
        source,
    })?;
    let path = control_socket(dir);
    let mut stream =
        UnixStream::connect(&path)
            .await
            .map_err(|source| UpgradeError::NoSupervisor {
                path: path.display().to_string(),
                source,
            })?;
    let mut line = serde_json::to_vec(&UpgradeRequest { binary, sha256 })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut answer = String::new();
    let mut reader = BufReader::new(stream);
    match tokio::time::timeout(wait, reader.read_line(&mut answer)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Err(e)) => return Err(e.into()),
        _ => return Err(UpgradeError::NoAnswer(wait.as_secs())),
    }
    serde_json::from_str(&answer).map_err(|_| UpgradeError::NoAnswer(wait.as_secs()))
}
