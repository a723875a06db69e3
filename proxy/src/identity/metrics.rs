//! The identity's metrics: when the certificate in force expires.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `braid_identity_expiry_timestamp_seconds`.
#[derive(Clone, Debug)]
pub struct IdentityMetrics {
    expiry: Gauge<f64, AtomicU64>,
}

impl IdentityMetrics {
    /// Registers the identity's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "identity_expiry_timestamp_seconds",
            "When the proxy's certificate in force expires (Unix seconds); 0 before it has one",
            expiry.clone(),
        );
        Self { expiry }
    }

    /// Records when the certificate in force expires.
    pub fn expiry(&self, not_after: SystemTime) {
        let secs = not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.expiry.set(secs);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn exports_the_expiry_in_unix_seconds() {
        let mut registry = Registry::with_prefix("braid");
        let m = IdentityMetrics::register(&mut registry);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("braid_identity_expiry_timestamp_seconds 0.0\n"),
            "{text}"
        );
        m.expiry(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("braid_identity_expiry_timestamp_seconds 1700000000.0\n"),
            "{text}"
        );
    }
}
