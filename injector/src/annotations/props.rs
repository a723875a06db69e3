//! Property tests of the annotation parser: every `braid.dev/*` annotation is read at
//! admission, so for any annotations a pod may carry it must answer without panicking
//! or looping, refuse exactly what it cannot use and name the annotation that is wrong,
//! take good values as they are written, leave other tools' annotations alone, and
//! suggest the annotation a misspelt key meant. A log filter it takes is one the
//! proxy's `EnvFilter` takes too (a sidecar that exits at start is the failure it
//! exists to prevent). Its errors stay proportionate to its input (bounded memory).
//!
//! `make test` runs 256 cases per property; `PROPTEST_CASES` sets another count, as
//! `make fuzz` does.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;

fn config() -> Config {
    Config {
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// Runs `f` on its own thread; panics if it takes longer than a few seconds (a loop, or
/// work superlinear in its input), and passes its panic on.
fn terminates<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let out = f();
        let _ = done.send(());
        out
    });
    match finished.recv_timeout(Duration::from_secs(5)) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within 5 s"),
    }
}

/// `known` with one character inserted, removed or replaced (after the prefix).
fn misspelt() -> impl Strategy<Value = String> {
    (
        prop::sample::select(USER_ANNOTATIONS.to_vec()),
        any::<prop::sample::Index>(),
        prop::sample::select(vec!['a', 'e', 'o', 'r', 'y', '-', 's', 'x', '.']),
        0u8..3,
    )
        .prop_map(|(known, at, c, how)| {
            let mut chars: Vec<char> = known.chars().collect();
            let at = PREFIX.len() + at.index(chars.len() - PREFIX.len());
            match how {
                0 => chars.insert(at, c),
                1 if chars.len() > PREFIX.len() + 1 => {
                    chars.remove(at.min(chars.len() - 1));
                }
                _ => {
                    let at = at.min(chars.len() - 1);
                    chars[at] = c;
                }
            }
            chars.into_iter().collect()
        })
}

/// Keys a pod may carry: braid's, braid's misspelt, unknown `braid.dev/` ones, others'.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(USER_ANNOTATIONS.to_vec()).prop_map(str::to_owned),
        1 => prop::sample::select(INJECTOR_ANNOTATIONS.to_vec()).prop_map(str::to_owned),
        2 => misspelt(),
        1 => "braid\\.dev/[a-z-]{0,24}",
        2 => prop::sample::select(vec![
            "app", "example.com/inject", "braid.dev", "braid.devx/inject", "sidecar.istio.io/inject",
            "kubectl.kubernetes.io/last-applied-configuration",
        ])
        .prop_map(str::to_owned),
    ]
}

fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
        prop::sample::select(vec![
            "",
            " ",
            "true",
            "false",
            "True",
            "yes",
            "0",
            "80",
            "65536",
            "1,2,,3",
            "10.0.0.0/8",
            "::/0",
            "100m",
            "64Mi",
            "1.5Gi",
            "info",
            "debug,braid_proxy=trace",
            "{}",
            "null",
            "{\"version\":\"x\"}",
            "\u{0}",
            "ｔｒｕｅ",
        ])
        .prop_map(str::to_owned),
    ]
}

/// What a valid value should parse to.
#[derive(Debug, Clone)]
enum Expect {
    Inject(bool),
    Ports(Vec<u16>),
    Cidrs(Vec<String>),
    Quantity(String),
    Log(String),
    Scope(Vec<String>),
    Limit(LimitOverride),
    /// `braid.dev/prometheus-scrape`: whether the pod opted out.
    OptOut(bool),
    /// `braid.dev/access-log`, `braid.dev/trace-collector`, `braid.dev/trace-sampling`:
    /// the value, trimmed.
    Telemetry(String),
}

/// The limit `key` sets, if it is one.
fn limit_of(key: &str) -> Option<Limit> {
    LIMITS.iter().copied().find(|l| l.annotation == key)
}

/// A valid value for `key`, written with spaces and case as users write it, and what it
/// means.
fn valid_value(key: &'static str) -> BoxedStrategy<(String, Expect)> {
    let sep = prop::sample::select(vec![",", ", ", " ,", ",,"]);
    match key {
        INJECT => any::<bool>()
            .prop_map(|b| (b.to_string(), Expect::Inject(b)))
            .boxed(),
        PROMETHEUS_SCRAPE => any::<bool>()
            .prop_map(|scrape| (scrape.to_string(), Expect::OptOut(!scrape)))
            .boxed(),
        EXCLUDE_INBOUND_PORTS | EXCLUDE_OUTBOUND_PORTS => {
            (prop::collection::vec(1u16..=65535, 1..5), sep)
                .prop_map(|(ports, sep)| {
                    let text = ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(sep);
                    (format!(" {text} "), Expect::Ports(ports))
                })
                .boxed()
        }
        EXCLUDE_OUTBOUND_CIDRS => {
            let cidr = prop_oneof![
                (any::<[u8; 4]>(), 0u8..=32)
                    .prop_map(|(a, l)| format!("{}/{l}", std::net::Ipv4Addr::from(a))),
                (any::<[u16; 8]>(), 0u8..=128)
                    .prop_map(|(a, l)| format!("{}/{l}", std::net::Ipv6Addr::from(a))),
            ];
            (prop::collection::vec(cidr, 1..4), sep)
                .prop_map(|(cidrs, sep)| (cidrs.join(sep), Expect::Cidrs(cidrs)))
                .boxed()
        }
        OUTBOUND_SCOPE => {
            let entry = (
                "[a-z][a-z0-9-]{0,12}",
                prop_oneof!["[a-z][a-z0-9-]{0,12}", Just("*".to_owned())],
            )
                .prop_map(|(ns, name)| format!("{ns}/{name}"));
            (prop::collection::vec(entry, 1..4), sep)
                .prop_map(|(entries, sep)| (entries.join(sep), Expect::Scope(entries)))
                .boxed()
        }
        ACCESS_LOG => (prop::sample::select(vec!["json", "off"]), " {0,2}")
            .prop_map(|(v, pad)| (format!("{pad}{v}{pad}"), Expect::Telemetry(v.to_owned())))
            .boxed(),
        TRACE_SAMPLING => prop_oneof![
            (0u8..=100).prop_map(|n| n.to_string()),
            (0u8..100, 0u16..1000).prop_map(|(n, f)| format!("{n}.{f}")),
            Just("100.0".to_owned()),
        ]
        .prop_map(|v| (format!(" {v}"), Expect::Telemetry(v)))
        .boxed(),
        TRACE_COLLECTOR => (
            prop_oneof![
                "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9-]{0,10}[a-z0-9]){0,3}",
                any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
                any::<[u16; 8]>().prop_map(|a| format!("[{}]", std::net::Ipv6Addr::from(a))),
            ],
            prop::option::of(1u16..=65535),
            prop::bool::ANY,
        )
            .prop_map(|(host, port, slash)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let slash = if slash { "/" } else { "" };
                let url = format!("http://{host}{port}{slash}");
                (url.clone(), Expect::Telemetry(url))
            })
            .boxed(),
        key if limit_of(key).is_some() => {
            let Some(limit) = limit_of(key) else {
                unreachable!("matched above")
            };
            let text = match limit.kind {
                LimitKind::Duration => (
                    1u32..100_000,
                    prop::sample::select(vec!["ms", "s", "m", "h"]),
                )
                    .prop_map(|(n, unit)| format!("{n}{unit}"))
                    .boxed(),
                LimitKind::Count { min, max } => (min..=max).prop_map(|n| n.to_string()).boxed(),
            };
            text.prop_map(move |text| {
                let value = LimitOverride {
                    env: limit.env,
                    value: text.clone(),
                };
                (format!(" {text} "), Expect::Limit(value))
            })
            .boxed()
        }
        PROXY_CPU | PROXY_MEMORY | INIT_CPU | INIT_MEMORY => (
            "[0-9]{1,4}(\\.[0-9]{1,3})?",
            prop::sample::select(vec![
                "", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "T", "P", "E",
            ]),
        )
            .prop_map(|(n, suffix)| {
                let q = format!("{n}{suffix}");
                (q.clone(), Expect::Quantity(q))
            })
            .boxed(),
        _ => prop_oneof![
            prop::sample::select(braid_api::log::LOG_LEVELS.to_vec()).prop_map(str::to_owned),
            Just("INFO".to_owned()),
            (
                prop::sample::select(braid_api::log::LOG_LEVELS.to_vec()),
                prop::sample::select(vec!["braid_proxy", "braid_proxy::http", "hyper", "h2"]),
                prop::sample::select(braid_api::log::LOG_LEVELS.to_vec()),
            )
                .prop_map(|(plain, target, level)| format!("{plain},{target}={level}")),
        ]
        .prop_map(|level| (level.clone(), Expect::Log(level)))
        .boxed(),
    }
}

/// A value `key` refuses.
fn invalid_value(key: &'static str) -> BoxedStrategy<String> {
    let values: Vec<&str> = match key {
        INJECT => vec!["True", "yes", "no", "1", "", " true", "maybe", "enabled"],
        PROMETHEUS_SCRAPE => vec!["False", "no", "0", "off", "disabled"],
        EXCLUDE_INBOUND_PORTS | EXCLUDE_OUTBOUND_PORTS => {
            vec![
                "0",
                "65536",
                "http",
                "-1",
                "80-90",
                "1e3",
                "８０",
                "80;81",
                "99999999999",
            ]
        }
        EXCLUDE_OUTBOUND_CIDRS => vec![
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "10.0.0.0/8/8",
        ],
        OUTBOUND_SCOPE => vec!["payments", "/payments", "shop/", "a/b/c", "shop payments"],
        ACCESS_LOG => vec!["JSON", "on", "true", "text", "json off"],
        TRACE_SAMPLING => vec![
            "-1", "101", "100.01", "NaN", "inf", "1e2", "101%", "lots", "+1", ".5", "0,5",
        ],
        TRACE_COLLECTOR => vec![
            "https://otel:4318",
            "otel:4318",
            "grpc://otel:4317",
            "http://otel:4318/v1/traces",
            "http://",
            "http://:4318",
            "http://otel:0",
            "http://otel:65536",
            "http://otel:x",
            "http://u@otel",
            "http://otel?x",
        ],
        key if limit_of(key).is_some_and(|l| l.kind == LimitKind::Duration) => {
            vec!["10", "0s", "0ms", "soon", "-5s", "5 parsecs", "1.5.s", "s"]
        }
        key if limit_of(key).is_some() => vec!["0", "-1", "lots", "1e3", "1.5", "99999999999"],
        PROXY_CPU | PROXY_MEMORY | INIT_CPU | INIT_MEMORY => {
            vec![
                "lots", "1.2.3", "Mi", "-1", "1 Mi", "1mi", ".", "1KiB", "0x10",
            ]
        }
        _ => vec![
            "loud",
            "nonsense===",
            "info,debug",
            "=info",
            "braid proxy=debug",
            "braid_proxy=",
            "info,,",
            "braid_proxy::=info",
        ],
    };
    prop::sample::select(values).prop_map(str::to_owned).boxed()
}

/// For each annotation a pod may set, maybe a valid value.
fn valid_annotations() -> impl Strategy<Value = Vec<(&'static str, String, Expect)>> {
    let each: Vec<_> = USER_ANNOTATIONS
        .iter()
        .map(|&key| {
            prop::option::of(valid_value(key)).prop_map(move |v| v.map(|(text, e)| (key, text, e)))
        })
        .collect();
    each.prop_map(|all| all.into_iter().flatten().collect())
}

/// One insertion, removal or substitution apart.
fn one_edit_apart(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    match long.len() - short.len() {
        0 => {
            short
                .iter()
                .zip(long.iter())
                .filter(|(x, y)| x != y)
                .count()
                == 1
        }
        1 => (0..long.len()).any(|skip| {
            long.iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, c)| c)
                .eq(short.iter())
        }),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config())]

    /// Whatever a pod carries, the parser answers; each error names a `braid.dev/` key
    /// the pod has; others' annotations never fail a pod; the errors stay in
    /// proportion to the annotations.
    #[test]
    fn any_annotations_are_answered(pairs in prop::collection::vec((key(), any_value()), 0..12)) {
        let annotations: BTreeMap<String, String> = pairs.into_iter().collect();
        let input = annotations.clone();
        let result = terminates(move || Overrides::parse(&input));
        let braid = annotations.keys().any(|k| k.starts_with(PREFIX));
        match result {
            Ok(_) => {}
            Err(errors) => {
                prop_assert!(braid && !errors.is_empty());
                let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
                let said: usize = errors.iter().map(|e| e.to_string().len()).sum();
                prop_assert!(said <= 16 * size + 1024 * annotations.len(), "{said} bytes of errors for {size}");
                for e in &errors {
                    prop_assert!(e.annotation.starts_with(PREFIX), "{e}");
                    prop_assert!(annotations.contains_key(&e.annotation), "names {} the pod lacks", e.annotation);
                    prop_assert!(e.message.len() > 20, "{e}");
                }
            }
        }
    }

    /// Good values are taken as written, whatever else (not braid's) the pod carries.
    #[test]
    fn valid_annotations_mean_what_they_say(
        valid in valid_annotations(),
        others in prop::collection::btree_map("[a-z.]{1,12}/[a-z]{1,8}", prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter), 0..3),
    ) {
        let mut annotations: BTreeMap<String, String> = others.into_iter().filter(|(k, _)| !k.starts_with(PREFIX)).collect();
        for (key, text, _) in &valid {
            annotations.insert((*key).to_owned(), text.clone());
        }
        let parsed = Overrides::parse(&annotations);
        prop_assert!(parsed.is_ok(), "{annotations:?}: {parsed:?}");
        let o = parsed.unwrap_or_default();
        for (key, _, expect) in &valid {
            match (*key, expect) {
                (INJECT, Expect::Inject(b)) => prop_assert_eq!(o.inject, Some(*b)),
                (PROMETHEUS_SCRAPE, Expect::OptOut(b)) => prop_assert_eq!(o.prometheus_opt_out, *b),
                (EXCLUDE_INBOUND_PORTS, Expect::Ports(p)) => prop_assert_eq!(&o.exclude_inbound_ports, p),
                (EXCLUDE_OUTBOUND_PORTS, Expect::Ports(p)) => prop_assert_eq!(&o.exclude_outbound_ports, p),
                (EXCLUDE_OUTBOUND_CIDRS, Expect::Cidrs(c)) => prop_assert_eq!(&o.exclude_outbound_cidrs, c),
                (PROXY_CPU, Expect::Quantity(q)) => prop_assert_eq!(o.proxy_cpu.as_ref(), Some(q)),
                (PROXY_MEMORY, Expect::Quantity(q)) => prop_assert_eq!(o.proxy_memory.as_ref(), Some(q)),
                (INIT_CPU, Expect::Quantity(q)) => prop_assert_eq!(o.init_cpu.as_ref(), Some(q)),
                (INIT_MEMORY, Expect::Quantity(q)) => prop_assert_eq!(o.init_memory.as_ref(), Some(q)),
                (LOG_LEVEL, Expect::Log(l)) => prop_assert_eq!(o.log_level.as_ref(), Some(l)),
                (OUTBOUND_SCOPE, Expect::Scope(s)) => prop_assert_eq!(&o.outbound_scope, s),
                (ACCESS_LOG, Expect::Telemetry(v)) => prop_assert_eq!(o.access_log.as_ref(), Some(v)),
                (TRACE_COLLECTOR, Expect::Telemetry(v)) => prop_assert_eq!(o.trace_collector.as_ref(), Some(v)),
                (TRACE_SAMPLING, Expect::Telemetry(v)) => prop_assert_eq!(o.trace_sampling.as_ref(), Some(v)),
                (key, Expect::Limit(l)) if limit_of(key).is_some() => {
                    prop_assert!(o.proxy_limits.contains(l), "{key}: {:?}", o.proxy_limits);
                }
                other => return Err(TestCaseError::fail(format!("generator mismatch {other:?}"))),
            }
        }
    }

    /// One bad value among good ones fails the pod with one error, naming it.
    #[test]
    fn a_bad_value_is_named(
        valid in valid_annotations(),
        bad in prop::sample::select(USER_ANNOTATIONS.to_vec())
            .prop_flat_map(|key| (Just(key), invalid_value(key))),
    ) {
        let (bad_key, bad_value) = bad;
        let mut annotations: BTreeMap<String, String> = valid
            .into_iter()
            .map(|(key, text, _)| (key.to_owned(), text))
            .collect();
        annotations.insert(bad_key.to_owned(), bad_value.clone());
        let errors = Overrides::parse(&annotations).err().unwrap_or_default();
        prop_assert_eq!(errors.len(), 1, "{}={:?}: {:?}", bad_key, bad_value, errors);
        prop_assert_eq!(errors[0].annotation.as_str(), bad_key);
    }

    /// A misspelt key is refused, with the annotation it meant suggested.
    #[test]
    fn a_misspelt_key_is_refused_with_a_suggestion(key in misspelt(), value in any_value()) {
        let known = USER_ANNOTATIONS.contains(&key.as_str()) || INJECTOR_ANNOTATIONS.contains(&key.as_str());
        prop_assume!(!known);
        let annotations = BTreeMap::from([(key.clone(), value)]);
        let errors = Overrides::parse(&annotations).err().unwrap_or_default();
        let named: Vec<_> = errors.iter().filter(|e| e.annotation == key).collect();
        prop_assert_eq!(named.len(), 1, "{:?}", errors);
        let message = &named[0].message;
        let suggested = message
            .split_once("(did you mean ")
            .and_then(|(_, rest)| rest.split_once("?)"))
            .map(|(name, _)| name);
        prop_assert!(
            suggested.is_some_and(|s| USER_ANNOTATIONS.contains(&s) && one_edit_apart(s, &key)),
            "{key}: {message}"
        );
    }

    /// Edit distance is a metric, and at least the difference in length.
    #[test]
    fn edit_distance_is_a_metric(a in "[a-c]{0,8}", b in "[a-c]{0,8}", c in "[a-c]{0,8}") {
        let d = edit_distance;
        prop_assert_eq!(d(&a, &a), 0);
        prop_assert_eq!(d(&a, &b), d(&b, &a));
        prop_assert!(d(&a, &c) <= d(&a, &b) + d(&b, &c));
        prop_assert!(d(&a, &b) >= a.len().abs_diff(b.len()));
        prop_assert!(d(&a, &b) <= a.len().max(b.len()));
        prop_assert_eq!(d(&a, &b) == 1, one_edit_apart(&a, &b));
    }

    /// A log filter the injector admits, the proxy's `EnvFilter` parses: the sidecar
    /// does not exit at start on it.
    #[test]
    fn admitted_log_filters_start_the_proxy(
        level in prop_oneof![
            valid_value(LOG_LEVEL).prop_map(|(text, _)| text),
            "[a-z_:=,. A-Z0-9]{0,24}",
        ],
    ) {
        let annotations = BTreeMap::from([(LOG_LEVEL.to_owned(), level.clone())]);
        if let Ok(Overrides { log_level: Some(filter), .. }) = Overrides::parse(&annotations) {
            let parsed = tracing_subscriber::EnvFilter::try_new(&filter);
            prop_assert!(parsed.is_ok(), "{filter:?}: {parsed:?}");
        }
    }
}
