//! The golden signals (success rate, requests per second, latency percentiles) of two
//! scrapes of every proxy's metrics: counters and histogram buckets are differenced per
//! series (a proxy that restarted in between counts from zero), then summed per workload,
//! service or TrafficRoute rule. Pure: no sockets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::cli::StatBy;
use braid_api::exposition::Sample;

/// The requests counter.
pub const REQUESTS: &str = "braid_requests_total";
/// The latency histogram's buckets.
pub const BUCKETS: &str = "braid_request_duration_seconds_bucket";

/// One proxy's metrics.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Its pod, `namespace/name`.
    pub pod: String,
    /// What runs it (a Deployment's name; the pod's own without one).
    pub owner: String,
    /// Its samples of [`REQUESTS`] and [`BUCKETS`].
    pub samples: Vec<Sample>,
}

/// The signals of one workload, service or rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Its namespace (a service's, from its name; empty for a bare address).
    pub namespace: String,
    /// The workload, or the service as `name:port`.
    pub name: String,
    /// The TrafficRoute rule (`stat route`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The group (`stat route`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Proxies whose metrics count here: the workload's, or a service's callers.
    pub proxies: usize,
    /// Requests in the window.
    pub requests: u64,
    /// Of them, answered other than 5xx, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_percent: Option<f64>,
    /// Requests per second; absent without a window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// Median time to response headers, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// `name.namespace[.svc…]:port` as (namespace, `name:port`); an address as ("", itself).
fn service(target: &str) -> (String, String) {
    let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or_default();
    match parts.next() {
        Some(ns) if host.parse::<std::net::IpAddr>().is_err() && !ns.is_empty() => {
            let name = match port {
                "" => name.to_owned(),
                p => format!("{name}:{p}"),
            };
            (ns.to_owned(), name)
        }
        _ => (String::new(), target.to_owned()),
    }
}

/// What a sample of `scrape` counts towards, or `None` when it is not `by`'s.
fn key(
    by: StatBy,
    scrape: &Scrape,
    s: &Sample,
) -> Option<(String, String, Option<String>, Option<String>)> {
    let direction = s.label("direction");
    match by {
        StatBy::Pod | StatBy::Deploy if direction == "inbound" => {
            let (ns, pod) = scrape.pod.split_once('/').unwrap_or(("", &scrape.pod));
            let name = match by {
                StatBy::Pod => pod.to_owned(),
                _ => scrape.owner.clone(),
            };
            Some((ns.to_owned(), name, None, None))
        }
        StatBy::Svc if direction == "outbound" => {
            let (ns, name) = service(s.label("target"));
            Some((ns, name, None, None))
        }
        StatBy::Route if direction == "outbound" => {
            let (ns, name) = service(s.label("target"));
            Some((
                ns,
                name,
                Some(s.label("rule").to_owned()),
                Some(s.label("group").to_owned()),
            ))
        }
        _ => None,
    }
}

/// Sums for one row.
#[derive(Default)]
struct Sums {
    proxies: BTreeSet<String>,
    requests: f64,
    errors: f64,
    /// Cumulative counts by upper bound, as the exposition writes them (`le`).
    buckets: BTreeMap<String, f64>,
}

/// The `q` quantile of cumulative `buckets`, in seconds, as Prometheus's
/// `histogram_quantile` works it out: linear within the bucket the rank falls in.
pub fn quantile(q: f64, buckets: &BTreeMap<String, f64>) -> Option<f64> {
    let mut sorted: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(le, n)| {
            let le = match le.as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().ok()?,
            };
            Some((le, *n))
        })
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in sorted {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let share = match count - below {
                d if d > 0.0 => (rank - below) / d,
                _ => 1.0,
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

/// A series of one proxy: its pod, the sample's name and labels.
type SeriesOf<'a> = (&'a str, &'a str, &'a [(String, String)]);

/// The rows of `after` less `before` (`None`: since each proxy started), over `window`.
pub fn rows(before: Option<&[Scrape]>, after: &[Scrape], by: StatBy, window: Duration) -> Vec<Row> {
    let mut earlier: HashMap<SeriesOf<'_>, f64> = HashMap::new();
    for scrape in before.unwrap_or_default() {
        for s in &scrape.samples {
            earlier.insert(
                (scrape.pod.as_str(), s.name.as_str(), s.labels.as_slice()),
                s.value,
            );
        }
    }
    let earlier_of = |scrape: &Scrape, s: &Sample| {
        earlier
            .get(&(scrape.pod.as_str(), s.name.as_str(), s.labels.as_slice()))
            .copied()
            .unwrap_or(0.0)
    };
    let mut sums: BTreeMap<(String, String, Option<String>, Option<String>), Sums> =
        BTreeMap::new();
    for scrape in after {
        // A counter that went down belongs to a proxy that restarted: all it counts is
        // new, for every series (buckets differenced apart would stop being cumulative).
        let restarted = scrape
            .samples
            .iter()
            .any(|s| s.value < earlier_of(scrape, s));
        let counted = scrape
            .samples
            .iter()
            .filter(|s| s.name == REQUESTS || s.name == BUCKETS);
        for s in counted {
            let Some(k) = key(by, scrape, s) else {
                continue;
            };
            let delta = match restarted {
                true => s.value,
                false => s.value - earlier_of(scrape, s),
            };
            let sum = sums.entry(k).or_default();
            sum.proxies.insert(scrape.pod.clone());
            if s.name == REQUESTS {
                sum.requests += delta;
                if s.label("code").starts_with('5') {
                    sum.errors += delta;
                }
            } else if s.name == BUCKETS {
                *sum.buckets.entry(s.label("le").to_owned()).or_default() += delta;
            }
        }
    }
    let secs = window.as_secs_f64();
    sums.into_iter()
        .map(|((namespace, name, rule, group), s)| {
            let ms = |q: f64| quantile(q, &s.buckets).map(|v| v * 1000.0);
            Row {
                namespace,
                name,
                rule,
                group,
                proxies: s.proxies.len(),
                requests: s.requests.round() as u64,
                success_percent: (s.requests > 0.0)
                    .then(|| 100.0 * (s.requests - s.errors) / s.requests),
                rps: (before.is_some() && secs > 0.0).then(|| s.requests / secs),
                p50_ms: ms(0.5),
                p95_ms: ms(0.95),
                p99_ms: ms(0.99),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_api::exposition::parse;

    fn scrape(pod: &str, owner: &str, text: &str) -> Scrape {
        Scrape {
            pod: pod.into(),
            owner: owner.into(),
            samples: parse(text, "braid_request"),
        }
    }

    const CLIENT_T0: &str = r#"braid_requests_total{direction="outbound",target="payments.shop:80",rule="default",group="v1",code="200"} 10
braid_requests_total{direction="outbound",target="payments.shop:80",rule="default",group="v2",code="503"} 2
braid_request_duration_seconds_bucket{direction="outbound",target="payments.shop:80",rule="default",group="v1",class="2xx",le="0.01"} 10
braid_request_duration_seconds_bucket{direction="outbound",target="payments.shop:80",rule="default",group="v1",class="2xx",le="0.02"} 10
braid_request_duration_seconds_bucket{direction="outbound",target="payments.shop:80",rule="default",group="v1",class="2xx",le="+Inf"} 10
"#;
    const CLIENT_T1: &str = r#"braid_requests_total{direction="outbound",target="payments.shop:80",rule="default",group="v1",code="200"} 40
braid_requests_total{direction="outbound",target="payments.shop:80",rule="default",group="v2",code="503"} 12
braid_requests_total{direction="outbound",target="10.0.0.9:5432",rule="",group="",code="200"} 1
braid_request_duration_seconds_bucket{direction="outbound",target="payments.shop:80",rule="default",group="v1",class="2xx",le="0.01"} 30
braid_request_duration_seconds_bucket{direction="outbound",target="payments.shop:80",rule="default",group="v1",class="2xx",le="0.02"} 40
braid_request_duration_seconds_bucket{direction="outbound",target="payments.shop:80",rule="default",group="v1",class="2xx",le="+Inf"} 40
braid_requests_total{direction="inbound",target="app:8080",code="200"} 7
"#;

    #[test]
    fn signals_are_the_differences_over_the_window() {
        let before = [scrape("web/client-0", "client", CLIENT_T0)];
        let after = [scrape("web/client-0", "client", CLIENT_T1)];
        let svc = rows(Some(&before), &after, StatBy::Svc, Duration::from_secs(10));
        assert_eq!(svc.len(), 2);
        assert_eq!(
            (svc[0].namespace.as_str(), svc[0].name.as_str()),
            ("", "10.0.0.9:5432")
        );
        let pay = &svc[1];
        assert_eq!(
            (pay.namespace.as_str(), pay.name.as_str()),
            ("shop", "payments:80")
        );
        assert_eq!(pay.requests, 40);
        assert_eq!(pay.success_percent, Some(75.0));
        assert_eq!(pay.rps, Some(4.0));
        // 30 new requests: 20 under 10 ms, 10 between 10 and 20 ms.
        assert!((pay.p50_ms.unwrap() - 7.5).abs() < 1e-9, "{pay:?}");
        assert!((pay.p99_ms.unwrap() - 19.7).abs() < 1e-9, "{pay:?}");

        let routes = rows(
            Some(&before),
            &after,
            StatBy::Route,
            Duration::from_secs(10),
        );
        let groups: Vec<(Option<&str>, u64)> = routes
            .iter()
            .filter(|r| r.namespace == "shop")
            .map(|r| (r.group.as_deref(), r.requests))
            .collect();
        assert_eq!(groups, [(Some("v1"), 30), (Some("v2"), 10)]);

        let pods = rows(None, &after, StatBy::Deploy, Duration::ZERO);
        assert_eq!(pods.len(), 1);
        assert_eq!(
            (
                pods[0].namespace.as_str(),
                pods[0].name.as_str(),
                pods[0].requests
            ),
            ("web", "client", 7)
        );
        assert_eq!(pods[0].rps, None);
    }

    #[test]
    fn other_families_make_no_rows() {
        let gauge = "braid_requests_in_flight{direction=\"outbound\"} 0\nbraid_requests_in_flight{direction=\"inbound\"} 0\n";
        let after = [scrape("web/idle-0", "idle", gauge)];
        for by in [StatBy::Pod, StatBy::Svc, StatBy::Route] {
            assert!(rows(None, &after, by, Duration::ZERO).is_empty());
        }
    }

    #[test]
    fn a_restarted_proxy_counts_from_zero() {
        let before = [scrape("web/client-0", "client", CLIENT_T1)];
        let after = [scrape("web/client-0", "client", CLIENT_T0)];
        let svc = rows(Some(&before), &after, StatBy::Svc, Duration::from_secs(1));
        assert_eq!(svc[0].requests, 12);
    }

    #[test]
    fn quantiles_follow_histogram_quantile() {
        let b: BTreeMap<String, f64> = [("0.1", 50.0), ("0.2", 100.0), ("+Inf", 100.0)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        assert_eq!(quantile(0.5, &b), Some(0.1));
        assert!((quantile(0.75, &b).unwrap() - 0.15).abs() < 1e-12);
        let inf: BTreeMap<String, f64> = [("0.1", 0.0), ("+Inf", 4.0)]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        assert_eq!(quantile(0.5, &inf), Some(0.1));
        assert_eq!(quantile(0.5, &BTreeMap::new()), None);
    }
}
