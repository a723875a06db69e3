//! A sink that keeps events and statuses in memory, for tests of the loops that record
//! events (the healer, the rollout loop) and read statuses back (a new leader resuming).

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Event, StatusError, StatusSink, StatusUpdate};
use crate::registry::{Kind, ObjectKey};

/// Every event recorded, in order, and the last status written of each resource.
#[derive(Default)]
pub struct RecordedEvents {
    /// The events, in the order recorded.
    pub events: Mutex<Vec<Event>>,
    /// The last status written of each resource.
    pub statuses: Mutex<BTreeMap<(Kind, ObjectKey), serde_json::Value>>,
}

impl StatusSink for RecordedEvents {
    fn apply<'a>(&'a self, update: &'a StatusUpdate) -> BoxFuture<'a, Result<(), StatusError>> {
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.insert((update.kind, update.key.clone()), update.status.clone());
        }
        Box::pin(async { Ok(()) })
    }
    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), StatusError>> {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
        Box::pin(async { Ok(()) })
    }
    fn read<'a>(
        &'a self,
        kind: Kind,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StatusError>> {
        let status = self
            .statuses
            .lock()
            .ok()
            .and_then(|s| s.get(&(kind, key.clone())).cloned());
        Box::pin(async move { Ok(status) })
    }
}
