//! Discovery's metrics (`crate::discovery`): what each address the app called that the
//! config did not know turned out to be. Here rather than beside discovery, which uses
//! the tables, which use the TLS context, which uses these metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What asking the operator about an address came to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// A mesh service: the proxy now holds it.
    service,
    /// No mesh service has the address: its connections pass through.
    unknown,
    /// The operator could not be asked (or answered too late): passed through.
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    result: Outcome,
}

/// `braid_discoveries_total{result}`.
#[derive(Clone, Debug)]
pub struct DiscoveryMetrics {
    discoveries: Family<Labels, Counter>,
}

impl DiscoveryMetrics {
    /// Registers discovery's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let discoveries = Family::<Labels, Counter>::default();
        registry.register(
            "discoveries",
            "Addresses the app called that the config did not know, by what asking the operator came to (service, unknown: passed through, failed: passed through)",
            discoveries.clone(),
        );
        Self { discoveries }
    }

    /// Counts one discovery.
    pub fn discovered(&self, result: Outcome) {
        self.discoveries.get_or_create(&Labels { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_outcome() {
        let mut registry = Registry::with_prefix("braid");
        let m = DiscoveryMetrics::register(&mut registry);
        m.discovered(Outcome::service);
        m.discovered(Outcome::failed);
        m.discovered(Outcome::failed);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("braid_discoveries_total{result=\"service\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("braid_discoveries_total{result=\"failed\"} 2\n"),
            "{text}"
        );
    }
}
