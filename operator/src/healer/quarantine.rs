//! The labels of a quarantined pod: `braid.dev/quarantined=true` keeps it out of every
//! proxy's config; `braid.dev/quarantined-by` names the SelfHealing that put it there,
//! so the operator lifts only its own quarantines.

use sha2::{Digest, Sha256};

pub use crate::registry::QUARANTINED;

/// The SelfHealing that quarantined the pod, as [`tag`] writes it.
pub const QUARANTINED_BY: &str = "braid.dev/quarantined-by";

/// Label values hold at most 63 characters.
const MAX_LABEL_VALUE: usize = 63;

/// The SelfHealing name as a label value: the name itself when it fits, else its first
/// 54 characters, a dash and 8 hex digits of its SHA-256 (still unique, still valid).
pub fn tag(self_healing: &str) -> String {
    if self_healing.len() <= MAX_LABEL_VALUE {
        return self_healing.to_owned();
    }
    let digest = Sha256::digest(self_healing.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    // Names are ASCII (DNS subdomains), so any byte index is a char boundary.
    format!("{}-{hex}", &self_healing[..MAX_LABEL_VALUE - 9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_become_valid_distinct_label_values() {
        assert_eq!(tag("payments"), "payments");
        let a = tag(&format!("{}a", "x".repeat(70)));
        let b = tag(&format!("{}b", "x".repeat(70)));
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
        assert!(a.chars().last().unwrap().is_ascii_alphanumeric());
    }
}
