//! Power of two choices: of two endpoints drawn at random, the one with the lower load.
//! Nearly as good as asking every endpoint, at the cost of two.

use std::time::Instant;

use super::{Endpoint, slow_start};

/// Costs closer than this share are equal.
const TIE: f64 = 1e-3;
/// One pick in this many takes the costlier of the two. A peak (one slow answer, a
/// failed connection) decays only with time, so without this an endpoint that lost once
/// could get no request for a minute: outlier detection would never see it fail (and
/// healing never act), nor a recovered endpoint show that it is fast again.
const EXPLORE: u32 = 32;

/// The endpoint chosen for a request.
#[derive(Clone, Copy, Debug)]
pub struct Picked<'a> {
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Every endpoint was ejected, so all were considered (panic mode).
    pub panic: bool,
    /// Endpoints whose ejection ran out while looking.
    pub returned: usize,
}

/// The endpoint to send the next request to, among those not ejected (all of them when
/// every one is: a group is never left with nothing); `None` when there is none.
///
/// Ejections count only when `ejecting`: the record is shared by every service that has
/// the endpoint, and a service without outlier detection must not skip what another
/// service's policy ejected.
pub fn pick(endpoints: &[Endpoint], ejecting: bool) -> Option<Picked<'_>> {
    let now = Instant::now();
    let mut returned = 0;
    let mut available = 0;
    if ejecting {
        for e in endpoints {
            let (ejected, back) = e.health.check(now);
            returned += usize::from(back);
            available += usize::from(!ejected);
        }
    } else {
        available = endpoints.len();
    }
    let panic = available == 0 && !endpoints.is_empty();
    let endpoint = if available == endpoints.len() || panic {
        two_choices(endpoints.len(), |i| endpoints.get(i), now)
    } else {
        // A few ejected: choose among the others (ejection ends only in `check`, so
        // "not ejected" cannot change between the count and this).
        let nth = |i| endpoints.iter().filter(|e| !e.health.check(now).0).nth(i);
        // Should another request eject one meanwhile, fall back to all of them.
        two_choices(available, nth, now)
            .or_else(|| two_choices(endpoints.len(), |i| endpoints.get(i), now))
    }?;
    Some(Picked {
        endpoint,
        panic,
        returned,
    })
}

/// Of two of `n` candidates drawn at random (`nth` gives the i-th), the less loaded.
fn two_choices<'a>(
    n: usize,
    nth: impl Fn(usize) -> Option<&'a Endpoint>,
    now: Instant,
) -> Option<&'a Endpoint> {
    match n {
        0 => None,
        1 => nth(0),
        n => {
            let a = fastrand::usize(..n);
            // A second, distinct index.
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (ea, eb) = (nth(a)?, nth(b)?);
            // Near-equal costs (idle endpoints differ only by rounding and decay) are a
            // tie, and `a` is the random one: no endpoint is favoured by its position.
            let (cheap, costly) = if eb.load.cost(now) < ea.load.cost(now) * (1.0 - TIE) {
                (eb, ea)
            } else {
                (ea, eb)
            };
            let (chosen, other) = if fastrand::u32(..EXPLORE) == 0 {
                (costly, cheap)
            } else {
                (cheap, costly)
            };
            // An endpoint warming up (slow start) gives way to a warmer one in proportion.
            let (wc, wo) = (
                chosen.health.warmup.weight(now),
                other.health.warmup.weight(now),
            );
            Some(if slow_start::keeps(wc, wo, fastrand::f64) {
                chosen
            } else {
                other
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Loads;
    use std::time::Duration;

    fn endpoints(n: u8) -> Vec<Endpoint> {
        let mut loads = Loads::default();
        (1..=n)
            .map(|i| loads.endpoint(format!("10.0.0.{i}:80").parse().unwrap()))
            .collect()
    }

    #[test]
    fn the_slow_endpoint_gets_little_traffic() {
        let eps = endpoints(3);
        let now = Instant::now();
        eps[0].load.observe(Duration::from_millis(200), now);
        eps[1].load.observe(Duration::from_millis(2), now);
        eps[2].load.observe(Duration::from_millis(2), now);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            let e = pick(&eps, true).unwrap().endpoint;
            counts[eps.iter().position(|x| x.addr == e.addr).unwrap()] += 1;
        }
        // The slow one only gets the exploring picks: 1 in 32 of the two-thirds of draws
        // that include it (about 2%), so its answers are still seen.
        assert!((20..150).contains(&counts[0]), "{counts:?}");
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
    }

    #[test]
    fn equal_endpoints_share_evenly_and_busy_ones_less() {
        let eps = endpoints(2);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].load.start()).collect();
        let to_idle = (0..1000)
            .filter(|_| pick(&eps, true).unwrap().endpoint.addr == eps[1].addr)
            .count();
        assert!((930..1000).contains(&to_idle), "{to_idle}");
        let eps = endpoints(4);
        let mut counts = [0; 4];
        for _ in 0..8000 {
            let e = pick(&eps, true).unwrap().endpoint;
            counts[eps.iter().position(|x| x.addr == e.addr).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|c| (1600..2400).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn an_endpoint_back_from_ejection_eases_into_its_share() {
        use crate::balance::slow_start::WINDOW;
        let share = |eps: &[Endpoint]| {
            (0..6000)
                .filter(|_| pick(eps, true).unwrap().endpoint.addr == eps[0].addr)
                .count()
        };
        let eps = endpoints(3);
        let now = Instant::now();
        // Idle endpoints tie: each would get a third (2,000 of 6,000).
        eps[0].health.warmup.start(now);
        let fresh = share(&eps);
        assert!(
            (80..400).contains(&fresh),
            "just back: about a tenth of a third, {fresh}"
        );
        eps[0].health.warmup.start(now - WINDOW / 2);
        let halfway = share(&eps);
        assert!(
            (800..1500).contains(&halfway),
            "halfway: about half, {halfway}"
        );
        eps[0].health.warmup.start(now - WINDOW);
        let warm = share(&eps);
        assert!((1700..2300).contains(&warm), "warm: a third, {warm}");
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_all_are() {
        use crate::balance::outlier::OutlierPolicy;
        use crate::config::outlier::OutlierDetection;
        let eps = endpoints(3);
        let policy = OutlierPolicy::compile(
            &OutlierDetection {
                consecutive_errors: 1,
                error_rate: None,
                base_ejection_time_ms: 60_000,
                max_ejection_time_ms: 60_000,
                max_ejection_percent: 100,
            },
            "o",
        )
        .unwrap();
        let now = Instant::now();
        crate::balance::record(&eps[0], &eps, true, now, &policy);
        assert!((0..300).all(|_| pick(&eps, true).unwrap().endpoint.addr != eps[0].addr));
        crate::balance::record(&eps[1], &eps, true, now, &policy);
        let only = pick(&eps, true).unwrap();
        assert_eq!((only.endpoint.addr, only.panic), (eps[2].addr, false));
        crate::balance::record(&eps[2], &eps, true, now, &policy);
        assert!(pick(&eps, true).unwrap().panic);
    }

    #[test]
    fn an_endpoint_that_failed_once_still_gets_some_requests() {
        let eps = endpoints(2);
        let now = Instant::now();
        eps[0]
            .load
            .observe(crate::balance::load::FAILURE_PENALTY, now);
        eps[1].load.observe(Duration::from_micros(500), now);
        let to_failed = (0..10_000)
            .filter(|_| pick(&eps, true).unwrap().endpoint.addr == eps[0].addr)
            .count();
        // 1 in 32: enough for outlier detection to judge it within a few requests.
        assert!((200..450).contains(&to_failed), "{to_failed}");
    }

    #[test]
    fn none_or_one() {
        assert!(pick(&[], true).is_none());
        let eps = endpoints(1);
        assert_eq!(pick(&eps, true).unwrap().endpoint.addr, eps[0].addr);
    }
}
