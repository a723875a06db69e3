//! Ejections waiting to be reported to the operator, which heals endpoints that several
//! callers keep ejecting. Bounded: when the operator is unreachable the oldest are
//! dropped, since a later report of the same endpoint says as much.

use std::sync::Mutex;

use braid_api::control::Ejection;

/// At most this many ejections wait for the next report.
const MAX_PENDING: usize = 256;

/// Ejections not yet reported.
#[derive(Debug, Default)]
pub struct EjectionLog(Mutex<Vec<Ejection>>);

impl EjectionLog {
    /// Queues one ejection for the next report.
    pub fn push(&self, ejection: Ejection) {
        if let Ok(mut pending) = self.0.lock() {
            if pending.len() >= MAX_PENDING {
                pending.remove(0);
            }
            pending.push(ejection);
        }
    }

    /// Takes everything queued.
    pub fn drain(&self) -> Vec<Ejection> {
        self.0
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejection(i: u16) -> Ejection {
        Ejection {
            target: "payments.shop:80".into(),
            endpoint: format!("10.0.0.1:{i}").parse().unwrap(),
            reason: "consecutive_errors".into(),
            duration_ms: 30_000,
        }
    }

    #[test]
    fn keeps_the_newest_and_drains_once() {
        let log = EjectionLog::default();
        for i in 0..300 {
            log.push(ejection(i));
        }
        let batch = log.drain();
        assert_eq!(batch.len(), MAX_PENDING);
        assert_eq!(batch[0].endpoint.port(), 300 - MAX_PENDING as u16);
        assert!(log.drain().is_empty());
    }
}
