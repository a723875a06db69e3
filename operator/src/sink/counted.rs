//! A sink that counts the events it records (`braid_operator_events_total`), so a
//! dashboard shows healing actions, rollout steps and their refusals without reading
//! Events; only the leader writes, so each is counted once.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Event, StatusError, StatusSink, StatusUpdate};
use crate::metrics::Metrics;
use crate::registry::{Kind, ObjectKey};

/// `inner`, its recorded events counted in `metrics`.
pub struct Counted {
    inner: Arc<dyn StatusSink>,
    metrics: Arc<Metrics>,
}

impl Counted {
    /// Counts the events `inner` records.
    pub fn new(inner: Arc<dyn StatusSink>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl StatusSink for Counted {
    fn apply<'a>(&'a self, update: &'a StatusUpdate) -> BoxFuture<'a, Result<(), StatusError>> {
        self.inner.apply(update)
    }

    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), StatusError>> {
        Box::pin(async move {
            self.inner.event(event).await?;
            self.metrics
                .event(event.kind.as_str(), &event.reason, event.warning);
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        kind: Kind,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StatusError>> {
        self.inner.read(kind, key)
    }

    fn forget<'a>(&'a self, kind: Kind, key: &'a ObjectKey) -> BoxFuture<'a, ()> {
        self.inner.forget(kind, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::recorded::RecordedEvents;

    #[tokio::test]
    async fn recorded_events_are_counted_by_kind_reason_and_type() {
        let metrics = Arc::new(Metrics::new());
        let sink = Counted::new(Arc::new(RecordedEvents::default()), metrics.clone());
        let event = |reason: &str, warning| Event {
            kind: Kind::SelfHealing,
            key: ObjectKey::new("shop", "payments"),
            reason: reason.into(),
            note: String::new(),
            warning,
        };
        for e in [
            event("PodRestarted", false),
            event("PodRestarted", false),
            event("HealingBlocked", true),
        ] {
            sink.event(&e).await.unwrap();
        }
        let text = metrics.encode();
        assert!(
            text.contains(r#"braid_operator_events_total{kind="SelfHealing",reason="PodRestarted",type="Normal"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"braid_operator_events_total{kind="SelfHealing",reason="HealingBlocked",type="Warning"} 1"#),
            "{text}"
        );
    }
}
