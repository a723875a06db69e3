//! The config's metrics: which version is in force. Recorded by the `on_apply` callback
//! `crate::app` sets on the table store.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// `braid_config_info`.
pub struct ConfigMetrics {
    info: Family<VersionLabels, Gauge>,
    /// The version `info` shows, so the next one replaces it.
    version: Mutex<String>,
}

impl ConfigMetrics {
    /// Registers the config's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "config_info",
            "The config version in force (value 1)",
            info.clone(),
        );
        Self {
            info,
            version: Mutex::new(String::new()),
        }
    }

    /// Records the config version now in force.
    pub fn applied(&self, version: &str) {
        let Ok(mut current) = self.version.lock() else {
            return;
        };
        let previous = std::mem::replace(&mut *current, version.to_owned());
        self.info.remove(&VersionLabels { version: previous });
        self.info
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    #[test]
    fn shows_only_the_version_in_force() {
        let mut registry = Registry::with_prefix("braid");
        let m = ConfigMetrics::register(&mut registry);
        m.applied("a1");
        m.applied("b2");
        let text = encode(&registry);
        assert!(
            text.contains(r#"braid_config_info{version="b2"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"version="a1""#), "{text}");
    }
}
