//! The injector's own metrics, served in plain HTTP on `--metrics-addr` (`/metrics`):
//! what became of each admission review and how long answering took, so a webhook that
//! refuses pods, or slows pod creation, shows on a dashboard before anyone files a
//! ticket.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::webhook::review::Reply;

/// What became of one admission review.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReviewResult {
    /// The pod was allowed with the sidecar added.
    injected,
    /// The pod was allowed as it was (opted out, not meshed, injected already).
    skipped,
    /// The pod was denied (a bad `braid.dev/*` annotation, a port the proxy needs, …),
    /// or the review was of something other than a pod.
    refused,
    /// The body was not an AdmissionReview of a pod (answered 400).
    invalid,
}

impl ReviewResult {
    /// What `reply` says became of the review.
    pub fn of(reply: &Reply) -> Self {
        let response = &reply.body["response"];
        match (reply.status, response["allowed"].as_bool()) {
            (200, Some(true)) if response.get("patch").is_some_and(|p| !p.is_null()) => {
                Self::injected
            }
            (200, Some(true)) => Self::skipped,
            (200, _) => Self::refused,
            _ => Self::invalid,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    result: ReviewResult,
}

/// `braid_injector_reviews_total` and `braid_injector_review_duration_seconds`.
pub struct InjectorMetrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    duration: Histogram,
}

impl Default for InjectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl InjectorMetrics {
    /// Registers them under the `braid_injector_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("braid_injector");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "Admission reviews of pods, by result: injected, skipped, refused (denied with the reason) or invalid (not a review)",
            reviews.clone(),
        );
        // 50 µs to 100 ms: a review is answered in well under a millisecond; the API
        // server's timeout for the webhook is 10 s.
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 12));
        registry.register(
            "review_duration_seconds",
            "Time to decide on and build the answer to one admission review (after its body arrived; not TLS or the transfer)",
            duration.clone(),
        );
        Self {
            registry,
            reviews,
            duration,
        }
    }

    /// Counts a review answered with `reply` after `took`.
    pub fn reviewed(&self, reply: &Reply, took: Duration) {
        self.reviews
            .get_or_create(&ReviewLabels {
                result: ReviewResult::of(reply),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// One sample in each family, so that the metrics reference shows their labels.
    pub fn exercise_for_reference(&self) {
        self.reviews
            .get_or_create(&ReviewLabels {
                result: ReviewResult::injected,
            })
            .inc();
        self.duration.observe(0.0002);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, response: serde_json::Value) -> Reply {
        Reply {
            status,
            body: serde_json::json!({ "response": response }),
        }
    }

    #[test]
    fn reviews_are_counted_by_what_became_of_them() {
        let m = InjectorMetrics::new();
        let injected = reply(200, serde_json::json!({"allowed": true, "patch": "W10="}));
        let skipped = reply(200, serde_json::json!({"allowed": true}));
        let refused = reply(200, serde_json::json!({"allowed": false}));
        let invalid = reply(400, serde_json::json!({"allowed": false}));
        for (r, want) in [
            (&injected, ReviewResult::injected),
            (&skipped, ReviewResult::skipped),
            (&refused, ReviewResult::refused),
            (&invalid, ReviewResult::invalid),
        ] {
            assert_eq!(ReviewResult::of(r), want);
            m.reviewed(r, Duration::from_micros(300));
        }
        m.reviewed(&injected, Duration::from_micros(300));
        let text = m.encode();
        assert!(
            text.contains(r#"braid_injector_reviews_total{result="injected"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"braid_injector_reviews_total{result="refused"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("braid_injector_review_duration_seconds_count 5"),
            "{text}"
        );
    }
}
