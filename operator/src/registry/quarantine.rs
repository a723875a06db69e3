//! What a quarantined pod is to the mesh: left out of every Service's endpoints. The
//! healer puts pods there and takes them out (`healer::quarantine`).

use super::Workload;

/// A pod with this label set to `true` is left out of every Service's endpoints.
pub const QUARANTINED: &str = "braid.dev/quarantined";

impl Workload {
    /// Whether the pod is quarantined: no proxy may send to it.
    pub fn is_quarantined(&self) -> bool {
        self.labels.get(QUARANTINED).map(String::as_str) == Some("true")
    }
}
