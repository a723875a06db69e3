//! The connection cap of one listener: a connection holds a permit until it closes; at
//! the cap the accept loop stops accepting, so new connections wait in the kernel's
//! backlog while established ones keep being served.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits for one listener's connections.
#[derive(Clone, Debug)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
}

/// A connection's place under the cap; dropping it frees the place.
#[derive(Debug)]
pub struct CapPermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl ConnectionCap {
    /// At most `max` connections at once (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place, if one is free now.
    pub fn try_acquire(&self) -> Option<CapPermit> {
        self.permits.clone().try_acquire_owned().ok().map(CapPermit)
    }

    /// A place, once one is free.
    pub async fn acquire(&self) -> CapPermit {
        match self.permits.clone().acquire_owned().await {
            Ok(permit) => CapPermit(permit),
            // The semaphore is never closed; were it, the cap would no longer hold.
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_place_frees_when_its_connection_ends() {
        let cap = ConnectionCap::new(2);
        let a = cap.try_acquire().expect("first");
        let _b = cap.try_acquire().expect("second");
        assert!(cap.try_acquire().is_none(), "the cap holds");
        let waiting = tokio::spawn({
            let cap = cap.clone();
            async move { cap.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        let _c = waiting.await.expect("a place after one closed");
        assert_eq!(cap.max(), 2);
    }
}
