//! What a proxy knows of its endpoints, as it is handed to a successor proxy (`handover`):
//! the latency estimate and the outlier record of each. Instants do not cross processes,
//! so times are carried as durations from the moment taken.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What stands for "for ever" when a carried time does not fit the clock.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// One endpoint's balancing state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Carried {
    /// The endpoint.
    pub addr: SocketAddr,
    /// Its latency estimate in nanoseconds, decayed to the moment taken.
    pub rtt_ns: f64,
    /// The outlier record.
    #[serde(default)]
    pub outlier: CarriedOutlier,
}

/// An outlier record, relative to the moment taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CarriedOutlier {
    /// Ejections so far (each doubles the next one's length).
    #[serde(default)]
    pub ejections: u32,
    /// How much longer it stays ejected, in milliseconds; none: it is not ejected.
    #[serde(default)]
    pub ejected_for_ms: Option<u64>,
    /// How long ago its last ejection ended, in milliseconds (none: never, or it has
    /// not ended yet).
    #[serde(default)]
    pub ended_ms_ago: Option<u64>,
}

impl CarriedOutlier {
    /// The record taken at `now` from an ejection that lasts until `until`, of
    /// `ejections` so far, the last of which ended (or ends) at `last_end`.
    pub fn taken(
        ejections: u32,
        until: Option<Instant>,
        last_end: Option<Instant>,
        now: Instant,
    ) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            ejections,
            ejected_for_ms: until.filter(|u| *u > now).map(|u| ms(u - now)),
            ended_ms_ago: last_end.filter(|e| *e <= now).map(|e| ms(now - e)),
        }
    }

    /// When the ejection ends, and when the last one ended, seen from `now`.
    pub fn at(&self, now: Instant) -> (Option<Instant>, Option<Instant>) {
        // A peer's number: past what the clock can say is as good as for ever.
        let until = self.ejected_for_ms.map(|ms| {
            now.checked_add(Duration::from_millis(ms))
                .unwrap_or(now + FOREVER)
        });
        let ended = self
            .ended_ms_ago
            .and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
        (until, until.or(ended))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ejection_keeps_its_remaining_time_and_count() {
        let now = Instant::now();
        let until = now + Duration::from_secs(20);
        let taken = CarriedOutlier::taken(3, Some(until), Some(until), now);
        assert_eq!(taken.ejections, 3);
        assert_eq!(taken.ejected_for_ms, Some(20_000));
        assert_eq!(taken.ended_ms_ago, None);
        let later = now + Duration::from_secs(5);
        let (until, last_end) = taken.at(later);
        assert_eq!(until, Some(later + Duration::from_secs(20)));
        assert_eq!(last_end, until);
    }

    #[test]
    fn an_ended_ejection_is_carried_as_how_long_ago() {
        let now = Instant::now() + Duration::from_secs(100);
        let ended = now - Duration::from_secs(30);
        let taken = CarriedOutlier::taken(1, Some(ended), Some(ended), now);
        assert_eq!(taken.ejected_for_ms, None);
        assert_eq!(taken.ended_ms_ago, Some(30_000));
        let (until, last_end) = taken.at(now);
        assert_eq!(until, None);
        assert_eq!(last_end, Some(ended));
    }
}
