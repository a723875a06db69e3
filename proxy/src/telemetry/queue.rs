//! A bounded hand-off from requests to a consumer that works in batches (the access-log
//! writer, the span exporter). A request pushes under a lock held for a `Vec::push`, and
//! wakes the consumer only when a batch's worth is waiting; otherwise the consumer comes
//! by on its own timer. A wake per request would cost more than the rest of the log line
//! or span together (a context switch each), so requests do not pay for one.

use std::sync::{Mutex, PoisonError};

/// Wakes the consumer.
pub type Nudge = Box<dyn Fn() + Send + Sync>;

/// At most `bound` items waiting; the consumer is nudged when `batch` are.
pub struct Queue<T> {
    items: Mutex<Vec<T>>,
    bound: usize,
    batch: usize,
    nudge: Nudge,
}

impl<T> Queue<T> {
    /// A queue of at most `bound` items that nudges its consumer at `batch`.
    pub fn new(bound: usize, batch: usize, nudge: Nudge) -> Self {
        Self {
            items: Mutex::new(Vec::new()),
            bound,
            batch: batch.clamp(1, bound.max(1)),
            nudge,
        }
    }

    /// Adds `item`, or gives it back when the queue is full.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        if items.len() >= self.bound {
            return Err(item);
        }
        items.push(item);
        let nudge = items.len() == self.batch;
        drop(items);
        if nudge {
            (self.nudge)();
        }
        Ok(())
    }

    /// Everything waiting, leaving the queue empty (with room for a batch, so pushes do
    /// not regrow it under the lock).
    pub fn take(&self) -> Vec<T> {
        let fresh = Vec::with_capacity(self.batch);
        std::mem::replace(
            &mut *self.items.lock().unwrap_or_else(PoisonError::into_inner),
            fresh,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn bounded_and_nudged_once_per_batch() {
        let nudged = Arc::new(AtomicUsize::new(0));
        let counted = nudged.clone();
        let q = Queue::new(
            5,
            2,
            Box::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        );
        for i in 0..5 {
            assert_eq!(q.push(i), Ok(()));
        }
        assert_eq!(q.push(5), Err(5), "full");
        assert_eq!(nudged.load(Ordering::Relaxed), 1);
        assert_eq!(q.take(), [0, 1, 2, 3, 4]);
        assert!(q.take().is_empty());
        q.push(6).unwrap();
        q.push(7).unwrap();
        assert_eq!(nudged.load(Ordering::Relaxed), 2);
    }
}
