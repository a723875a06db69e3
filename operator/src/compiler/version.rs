//! Config versions: content hashes, so the same config always has the same version, on
//! every operator replica and across restarts, and a reconnecting proxy that already
//! holds it is sent nothing.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A SHA-256 digest of serialised content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest256([u8; 32]);

impl Digest256 {
    /// The digest of `value` as JSON.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        let mut hasher = Sha256::new();
        // Writing into a hasher cannot fail, and our types always serialise.
        let _ = serde_json::to_writer(HashWriter(&mut hasher), value);
        Self(hasher.finalize().into())
    }

    /// The digest of several digests, in order.
    pub fn combine<'a>(parts: impl IntoIterator<Item = &'a Digest256>) -> Self {
        let mut hasher = Sha256::new();
        for p in parts {
            hasher.update(p.0);
        }
        Self(hasher.finalize().into())
    }

    /// The version string: the first 8 bytes in hex (64 bits: collisions are not a
    /// concern for the handful of versions a proxy ever compares).
    pub fn version(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_depend_on_content_only() {
        let a = Digest256::of(&vec![1, 2, 3]);
        assert_eq!(a, Digest256::of(&vec![1, 2, 3]));
        assert_ne!(a, Digest256::of(&vec![1, 2, 4]));
        assert_eq!(a.version().len(), 16);
        assert_ne!(Digest256::combine([&a, &a]), Digest256::combine([&a]));
    }
}
