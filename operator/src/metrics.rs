//! Prometheus metrics of the operator, served on the admin port's `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a stream or report request was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    /// Missing or bad token (401).
    unauthenticated,
    /// A token for another workload (403).
    forbidden,
    /// A pod the operator does not know, or not meshed (404).
    unknown_pod,
    /// A malformed request (400).
    bad_request,
    /// The token could not be checked (503).
    unavailable,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

/// What a discovery found.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Found {
    /// A mesh service.
    service,
    /// No mesh service has the address.
    unknown,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscoveryLabels {
    result: Found,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CaLabels {
    /// The CA Secret, `namespace/name`.
    secret: String,
}

/// A resource as `namespace/name` (not a `namespace` label, which Prometheus's own target
/// label of the same name would rename).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    policy: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: String,
    reason: String,
    r#type: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Proxies holding a config stream open.
    pub connected_proxies: Gauge,
    /// Config versions written to proxies.
    pub pushes: Counter,
    /// Of `pushes`, those written as deltas.
    pub deltas: Counter,
    /// From a change being seen to its config being written to a proxy's stream.
    pub push_latency: Histogram,
    /// From a change being noticed to a proxy reporting it applied.
    pub apply_latency: Histogram,
    /// Bytes of config written to proxies' streams.
    pub config_bytes: Counter,
    /// Time of one compile.
    pub compile_seconds: Histogram,
    /// Configs proxies reported refusing.
    pub proxy_rejections: Counter,
    /// Endpoint ejections proxies reported.
    pub ejection_reports: Counter,
    refusals: Family<RefusalLabels, Counter>,
    discoveries: Family<DiscoveryLabels, Counter>,
    ca_expiry: Family<CaLabels, Gauge>,
    rollout_percent: Family<PolicyLabels, Gauge>,
    rollout_phase: Family<PhaseLabels, Gauge>,
    unhealthy: Family<PolicyLabels, Gauge>,
    events: Family<EventLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("braid_operator");
        let connected_proxies = Gauge::default();
        registry.register(
            "connected_proxies",
            "Proxies holding a config stream open",
            connected_proxies.clone(),
        );
        let pushes = Counter::default();
        registry.register(
            "config_pushes",
            "Config versions written to proxies",
            pushes.clone(),
        );
        let deltas = Counter::default();
        registry.register(
            "config_deltas",
            "Of config_pushes, those written as a delta (what changed since the stream's last version) rather than a whole config",
            deltas.clone(),
        );
        // 1 ms .. ~16 s
        let push_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "push_latency_seconds",
            "From the source noticing a change (watch event, file poll) to the new config being written to a proxy's stream",
            push_latency.clone(),
        );
        let config_bytes = Counter::default();
        registry.register(
            "config_bytes",
            "Bytes of config written to proxies' streams (with pushes: what a change costs on the wire)",
            config_bytes.clone(),
        );
        let apply_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "apply_latency_seconds",
            "From the source noticing a change (watch event, file poll) to a proxy reporting the config it caused applied",
            apply_latency.clone(),
        );
        let compile_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "compile_seconds",
            "Time of one compile",
            compile_seconds.clone(),
        );
        let proxy_rejections = Counter::default();
        registry.register(
            "proxy_config_rejections",
            "Configs proxies reported refusing",
            proxy_rejections.clone(),
        );
        let ejection_reports = Counter::default();
        registry.register(
            "proxy_ejection_reports",
            "Endpoint ejections proxies reported",
            ejection_reports.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "stream_refusals",
            "Config stream and report requests refused, by reason",
            refusals.clone(),
        );
        let discoveries = Family::<DiscoveryLabels, Counter>::default();
        registry.register(
            "discoveries",
            "Addresses on-demand proxies asked about, by whether a mesh service has them",
            discoveries.clone(),
        );
        // A family, so that without a CA (directory mode) there is no series at all
        // rather than a 0 that looks long expired.
        let ca_expiry = Family::<CaLabels, Gauge>::default();
        registry.register(
            "ca_expiry_timestamp_seconds",
            "When the signing certificate of the CA Secret expires (Unix time); nothing can be issued after it",
            ca_expiry.clone(),
        );
        let rollout_percent = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "encryption_rollout_percent",
            "The share of an EncryptionPolicy's callers originating mTLS, in percent (its status's rollout)",
            rollout_percent.clone(),
        );
        let rollout_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "encryption_phase",
            "An EncryptionPolicy's phase (value 1): Plaintext, RollingOut, Encrypted or Strict",
            rollout_phase.clone(),
        );
        let unhealthy = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "healing_unhealthy_endpoints",
            "Endpoints of a SelfHealing's workloads that proxies report ejected now",
            unhealthy.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events the operator recorded on its resources, by kind, reason (PodRestarted, PodQuarantined, HealingBlocked, RolloutAdvanced, …) and type (Normal, Warning)",
            events.clone(),
        );
        Self {
            registry,
            ca_expiry,
            rollout_percent,
            rollout_phase,
            unhealthy,
            events,
            connected_proxies,
            pushes,
            deltas,
            push_latency,
            apply_latency,
            config_bytes,
            compile_seconds,
            proxy_rejections,
            ejection_reports,
            refusals,
            discoveries,
        }
    }

    /// Counts a discovery: whether it found a mesh service.
    pub fn discovered(&self, found: bool) {
        let result = if found {
            Found::service
        } else {
            Found::unknown
        };
        self.discoveries
            .get_or_create(&DiscoveryLabels { result })
            .inc();
    }

    /// Counts a refused request.
    pub fn refused(&self, reason: Refusal) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// The CA in the Secret `secret` (`namespace/name`) signs until `not_after`.
    pub fn ca_expires(&self, secret: &str, not_after: std::time::SystemTime) {
        let seconds = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.ca_expiry
            .get_or_create(&CaLabels {
                secret: secret.to_string(),
            })
            .set(seconds);
    }

    /// The EncryptionPolicies' rollouts now: `(namespace, name, phase, percent)` each; a
    /// policy no longer listed has no series.
    pub fn rollouts<'a>(
        &self,
        policies: impl IntoIterator<Item = (&'a str, &'a str, &'a str, u8)>,
    ) {
        self.rollout_percent.clear();
        self.rollout_phase.clear();
        for (namespace, policy, phase, percent) in policies {
            let policy = format!("{namespace}/{policy}");
            self.rollout_percent
                .get_or_create(&PolicyLabels {
                    policy: policy.clone(),
                })
                .set(i64::from(percent));
            self.rollout_phase
                .get_or_create(&PhaseLabels {
                    policy,
                    phase: phase.to_owned(),
                })
                .set(1);
        }
    }

    /// The SelfHealings' unhealthy endpoints now: `(namespace, name, count)` each.
    pub fn unhealthy<'a>(&self, healings: impl IntoIterator<Item = (&'a str, &'a str, usize)>) {
        self.unhealthy.clear();
        for (namespace, policy, count) in healings {
            self.unhealthy
                .get_or_create(&PolicyLabels {
                    policy: format!("{namespace}/{policy}"),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Counts an event recorded on a resource of `kind`.
    pub fn event(&self, kind: &str, reason: &str, warning: bool) {
        self.events
            .get_or_create(&EventLabels {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
                r#type: if warning { "Warning" } else { "Normal" }.to_owned(),
            })
            .inc();
    }

    /// Records one sample in each family with labels, with placeholder values, so that
    /// the exposition shows their label names: for the metrics reference
    /// (`docs/metrics.md`).
    pub fn exercise_for_reference(&self) {
        self.discovered(true);
        self.refused(Refusal::forbidden);
        self.ca_expires("braid-system/braid-ca", std::time::SystemTime::now());
        self.rollouts([("shop", "payments", "RollingOut", 25)]);
        self.unhealthy([("shop", "payments", 1)]);
        self.event("SelfHealing", "PodRestarted", false);
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
