//! A sink that keeps events in memory and writes no status, for tests of the loops that
//! record events (the healer, the rollout loop).

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Event, StatusError, StatusSink, StatusUpdate};

/// Every event recorded, in order.
#[derive(Default)]
pub struct RecordedEvents(pub Mutex<Vec<Event>>);

impl StatusSink for RecordedEvents {
    fn apply<'a>(&'a self, _: &'a StatusUpdate) -> BoxFuture<'a, Result<(), StatusError>> {
        Box::pin(async { Ok(()) })
    }
    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), StatusError>> {
        if let Ok(mut events) = self.0.lock() {
            events.push(event.clone());
        }
        Box::pin(async { Ok(()) })
    }
}
