//! Power of two choices: of two endpoints drawn at random, the one with the lower load.
//! Nearly as good as asking every endpoint, at the cost of two.

use std::time::Instant;

use super::Endpoint;

/// Costs closer than this share are equal.
const TIE: f64 = 1e-3;

/// The endpoint to send the next request to; `None` when there is none.
pub fn pick(endpoints: &[Endpoint]) -> Option<&Endpoint> {
    match endpoints.len() {
        0 => None,
        1 => endpoints.first(),
        n => {
            let a = fastrand::usize(..n);
            // A second, distinct index.
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let now = Instant::now();
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            // Near-equal costs (idle endpoints differ only by rounding and decay) are a
            // tie, and `a` is the random one: no endpoint is favoured by its position.
            Some(if eb.load.cost(now) < ea.load.cost(now) * (1.0 - TIE) {
                eb
            } else {
                ea
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
            let e = pick(&eps).unwrap();
            counts[eps.iter().position(|x| x.addr == e.addr).unwrap()] += 1;
        }
        // The slow one only wins when both draws are it, which two distinct draws never are.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
    }

    #[test]
    fn equal_endpoints_share_evenly_and_busy_ones_less() {
        let eps = endpoints(2);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].load.start()).collect();
        let to_idle = (0..1000)
            .filter(|_| pick(&eps).unwrap().addr == eps[1].addr)
            .count();
        assert_eq!(to_idle, 1000);
        let eps = endpoints(4);
        let mut counts = [0; 4];
        for _ in 0..8000 {
            let e = pick(&eps).unwrap();
            counts[eps.iter().position(|x| x.addr == e.addr).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|c| (1600..2400).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn none_or_one() {
        assert!(pick(&[]).is_none());
        let eps = endpoints(1);
        assert_eq!(pick(&eps).unwrap().addr, eps[0].addr);
    }
}
