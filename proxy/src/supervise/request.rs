//! What `braid-proxy upgrade` asks a supervisor and what it is answered: one JSON line
//! each way over the control socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Replace the running proxy with `binary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRequest {
    /// The new proxy binary (copied by the supervisor before it runs it).
    pub binary: PathBuf,
    /// Its SHA-256 as 64 hex digits; when given, a binary of another digest is refused.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// How an upgrade ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum UpgradeAnswer {
    /// The new proxy runs, and the one it replaced has exited.
    Upgraded {
        /// The replaced proxy's process id.
        from_pid: u32,
        /// The new proxy's.
        to_pid: u32,
        /// The SHA-256 of the binary now running.
        sha256: String,
    },
    /// Nothing changed: the running proxy keeps serving.
    Refused {
        /// Why, naming what to fix.
        reason: String,
    },
}

/// Checks `hex` is a SHA-256 as 64 hex digits, lower-cased.
pub fn parse_sha256(hex: &str) -> Result<String, String> {
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "--sha256 {hex:?}: not a SHA-256 (64 hex digits, as `sha256sum` prints)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_64_hex_digits() {
        let d = "A".repeat(64);
        assert_eq!(parse_sha256(&d).unwrap(), "a".repeat(64));
        assert!(parse_sha256("abc").unwrap_err().contains("64 hex digits"));
        assert!(parse_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn answers_round_trip() {
        let a = UpgradeAnswer::Refused { reason: "x".into() };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"outcome":"refused","reason":"x"}"#);
        assert_eq!(serde_json::from_str::<UpgradeAnswer>(&json).unwrap(), a);
    }
}
