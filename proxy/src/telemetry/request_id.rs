//! `x-request-id`: kept when the caller sent one, made up (a random UUID, as Envoy
//! makes them) when not, so every hop's access log and span name the same request.

use http::HeaderName;

/// The header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id a log line or span keeps: a longer one is cut there, not in the
/// request.
const MAX_LOGGED: usize = 128;

/// A new random (version 4) UUID, in its usual lowercase form.
pub fn generate() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    id
}

/// What a log shows of an id the caller sent: at most [`MAX_LOGGED`] characters.
pub fn logged(id: &str) -> &str {
    super::cut(id, MAX_LOGGED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_uuids_and_differ() {
        let a = generate();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(a, generate());
        assert_eq!(logged(&"x".repeat(500)).len(), MAX_LOGGED);
    }
}
