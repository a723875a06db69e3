//! The pod's `braid.dev/*` annotations, every one parsed at admission with errors that
//! name the annotation, what it accepts and how to fix it. A key braid does not know is
//! an error too: a misspelt one would otherwise be ignored without a word.

use std::collections::BTreeMap;

use braid_api::log::LogFilterError;

use crate::inject::{InjectStatus, ORIGINAL_PROBES, Original};

mod limits;
pub mod telemetry;

pub use limits::{Kind as LimitKind, LIMITS, Limit, LimitError, LimitOverride};
pub use telemetry::{ACCESS_LOG, TRACE_COLLECTOR, TRACE_SAMPLING};

/// `"false"` opts a pod out, `"true"` opts it in.
pub const INJECT: &str = "braid.dev/inject";
/// What was injected, by which version: makes injection idempotent and `uninject` exact.
pub const STATUS: &str = "braid.dev/status";
/// Inbound ports the proxy does not capture.
pub const EXCLUDE_INBOUND_PORTS: &str = "braid.dev/exclude-inbound-ports";
/// Outbound ports the proxy does not capture.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "braid.dev/exclude-outbound-ports";
/// Outbound destinations (CIDRs) the proxy does not capture.
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "braid.dev/exclude-outbound-cidrs";
/// The proxy's CPU request (and limit).
pub const PROXY_CPU: &str = "braid.dev/proxy-cpu";
/// The proxy's memory request (and limit).
pub const PROXY_MEMORY: &str = "braid.dev/proxy-memory";
/// `braid-init`'s CPU request (and limit).
pub const INIT_CPU: &str = "braid.dev/init-cpu";
/// `braid-init`'s memory request (and limit).
pub const INIT_MEMORY: &str = "braid.dev/init-memory";
/// The proxy's log filter.
pub const LOG_LEVEL: &str = "braid.dev/log-level";
/// Services the proxy holds before the app calls them.
pub use braid_api::control::OUTBOUND_SCOPE_ANNOTATION as OUTBOUND_SCOPE;
/// `"false"`: the injector adds no `prometheus.io/*` scrape annotations for the proxy.
pub const PROMETHEUS_SCRAPE: &str = "braid.dev/prometheus-scrape";

/// The annotations users set, in the order error messages list them.
pub const USER_ANNOTATIONS: [&str; 22] = [
    INJECT,
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_PORTS,
    EXCLUDE_OUTBOUND_CIDRS,
    PROXY_CPU,
    PROXY_MEMORY,
    INIT_CPU,
    INIT_MEMORY,
    LOG_LEVEL,
    OUTBOUND_SCOPE,
    PROMETHEUS_SCRAPE,
    ACCESS_LOG,
    TRACE_COLLECTOR,
    TRACE_SAMPLING,
    LIMITS[0].annotation,
    LIMITS[1].annotation,
    LIMITS[2].annotation,
    LIMITS[3].annotation,
    LIMITS[4].annotation,
    LIMITS[5].annotation,
    LIMITS[6].annotation,
    LIMITS[7].annotation,
];

/// The annotations braid-injector writes itself when it injects a pod.
pub const INJECTOR_ANNOTATIONS: [&str; 2] = [STATUS, ORIGINAL_PROBES];

/// The prefix of every braid annotation.
const PREFIX: &str = "braid.dev/";

/// An annotation with a value braid cannot use, or a `braid.dev/` key braid does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {message}")]
pub struct BadAnnotation {
    /// The annotation's key, as the pod spells it.
    pub annotation: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The tuning a pod asks for, and what an earlier injection recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `braid.dev/inject`: `Some(true)` opts in, `Some(false)` out, `None` follows the
    /// namespace.
    pub inject: Option<bool>,
    /// `braid.dev/exclude-inbound-ports`.
    pub exclude_inbound_ports: Vec<u16>,
    /// `braid.dev/exclude-outbound-ports`.
    pub exclude_outbound_ports: Vec<u16>,
    /// `braid.dev/exclude-outbound-cidrs`.
    pub exclude_outbound_cidrs: Vec<String>,
    /// `braid.dev/proxy-cpu`.
    pub proxy_cpu: Option<String>,
    /// `braid.dev/proxy-memory`.
    pub proxy_memory: Option<String>,
    /// `braid.dev/init-cpu`.
    pub init_cpu: Option<String>,
    /// `braid.dev/init-memory`.
    pub init_memory: Option<String>,
    /// `braid.dev/log-level`.
    pub log_level: Option<String>,
    /// `braid.dev/outbound-scope`: checked here, read by the operator.
    pub outbound_scope: Vec<String>,
    /// `braid.dev/prometheus-scrape: "false"`: add no `prometheus.io/*` annotations
    /// pointing Prometheus at the proxy.
    pub prometheus_opt_out: bool,
    /// `braid.dev/access-log`: `"json"` or `"off"` (else the injector's
    /// `--proxy-access-log`). This and the next two are checked with the proxy's rule and
    /// kept as written (trimmed); the sidecar gets the proxy's normal form.
    pub access_log: Option<String>,
    /// `braid.dev/trace-collector`: the OTLP/HTTP base URL, `http://host[:port]`, or
    /// `"off"` for no export even when the injector has a `--trace-collector` (else
    /// the injector's `--trace-collector`, if any).
    pub trace_collector: Option<String>,
    /// `braid.dev/trace-sampling`: the percentage of new traces sampled, 0-100 (else the
    /// injector's `--trace-sampling`).
    pub trace_sampling: Option<String>,
    /// The connection limits set (`braid.dev/idle-timeout`, … see [`LIMITS`]), in
    /// [`LIMITS`] order.
    pub proxy_limits: Vec<LimitOverride>,
    /// `braid.dev/status`: the pod was injected already (by the webhook, or offline into
    /// its template), and this is what was added.
    pub status: Option<InjectStatus>,
}

impl Overrides {
    /// Reads every braid annotation of a pod; all problems are reported together. An
    /// empty value means the default, except for `braid.dev/inject`, which decides
    /// whether the pod is meshed and so must say which.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, Vec<BadAnnotation>> {
        let mut errors = Vec::new();
        let bad = |annotation: &str, message: String| BadAnnotation {
            annotation: annotation.to_owned(),
            message,
        };
        for key in annotations.keys() {
            if key.starts_with(PREFIX)
                && !USER_ANNOTATIONS.contains(&key.as_str())
                && !INJECTOR_ANNOTATIONS.contains(&key.as_str())
            {
                errors.push(bad(key, unknown_key(key)));
            }
        }
        let get = |name: &str| {
            annotations
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let inject = match annotations.get(INJECT).map(String::as_str) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                errors.push(bad(
                    INJECT,
                    format!(
                        "{other:?} is neither \"true\" nor \"false\": write \"true\" or \"false\" \
                         to mesh the pod or leave it out, quoted (YAML reads a bare true/false/yes/no \
                         as a boolean, which is not a string), or remove it to follow the \
                         namespace's braid.dev/inject=enabled label"
                    ),
                ));
                None
            }
        };
        let mut ports = |name: &'static str| -> Vec<u16> {
            let Some(value) = get(name) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.parse::<u16>() {
                    Ok(p) if p > 0 => out.push(p),
                    _ => errors.push(bad(
                        name,
                        format!("{part:?} is not a port: write comma-separated numbers 1-65535, e.g. \"5432,6379\""),
                    )),
                }
            }
            out
        };
        let exclude_inbound_ports = ports(EXCLUDE_INBOUND_PORTS);
        let exclude_outbound_ports = ports(EXCLUDE_OUTBOUND_PORTS);
        let mut exclude_outbound_cidrs = Vec::new();
        if let Some(value) = get(EXCLUDE_OUTBOUND_CIDRS) {
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if is_cidr(part) {
                    exclude_outbound_cidrs.push(part.to_owned());
                } else {
                    errors.push(bad(
                        EXCLUDE_OUTBOUND_CIDRS,
                        format!("{part:?} is not a CIDR: write e.g. \"10.0.0.0/8,fd00::/8\""),
                    ));
                }
            }
        }
        let mut quantity = |name: &'static str| -> Option<String> {
            let value = get(name)?;
            if is_quantity(value) {
                Some(value.to_owned())
            } else {
                errors.push(bad(
                    name,
                    format!("{value:?} is not a Kubernetes quantity: write e.g. \"100m\" (CPU) or \"64Mi\" (memory), or remove it for the default"),
                ));
                None
            }
        };
        let proxy_cpu = quantity(PROXY_CPU);
        let proxy_memory = quantity(PROXY_MEMORY);
        let init_cpu = quantity(INIT_CPU);
        let init_memory = quantity(INIT_MEMORY);
        let log_level = get(LOG_LEVEL).and_then(|value| match log_filter(value) {
            Ok(()) => Some(value.to_owned()),
            Err(e) => {
                errors.push(bad(
                    LOG_LEVEL,
                    format!(
                        "{value:?} is not a log filter braid-proxy accepts ({e}): write a level \
                         (error, warn, info, debug, trace or off) or directives like \
                         \"info,braid_proxy=debug\", or remove it for the default"
                    ),
                ));
                None
            }
        });
        let mut outbound_scope = Vec::new();
        if let Some(value) = get(OUTBOUND_SCOPE) {
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.parse::<braid_api::control::delta::ServiceRef>() {
                    Ok(_) => outbound_scope.push(part.to_owned()),
                    Err(_) => errors.push(bad(
                        OUTBOUND_SCOPE,
                        format!("{part:?} is not namespace/name: name services as \"shop/payments,shop/orders\", or \"shop/*\" for all of a namespace's"),
                    )),
                }
            }
        }
        let prometheus_opt_out = match get(PROMETHEUS_SCRAPE) {
            None | Some("true") => false,
            Some("false") => true,
            Some(other) => {
                errors.push(bad(
                    PROMETHEUS_SCRAPE,
                    format!(
                        "{other:?} is neither \"true\" nor \"false\": write \"false\", quoted, to \
                         leave out the prometheus.io/* annotations for the proxy, or remove it"
                    ),
                ));
                false
            }
        };
        let mut observability = |name: &'static str,
                                 check: fn(&str) -> Result<String, telemetry::TelemetryError>,
                                 flag: &str| {
            let value = get(name)?;
            // Kept as written (trimmed), as the limits are; the sidecar gets the proxy's
            // normal form of it.
            check(value)
                .map(|_| value.to_owned())
                .map_err(|e| {
                    errors.push(bad(
                        name,
                        format!("{e}; or remove it for the injector's default (its {flag})"),
                    ));
                })
                .ok()
        };
        let access_log = observability(ACCESS_LOG, telemetry::access_log, "--proxy-access-log");
        let trace_collector = observability(
            TRACE_COLLECTOR,
            telemetry::trace_collector,
            "--trace-collector",
        );
        let trace_sampling = observability(
            TRACE_SAMPLING,
            telemetry::trace_sampling,
            "--trace-sampling",
        );
        let proxy_limits = LIMITS
            .iter()
            .filter_map(|limit| {
                let value = get(limit.annotation)?;
                limit
                    .check(value)
                    .map_err(|e| errors.push(bad(limit.annotation, e.to_string())))
                    .ok()
            })
            .collect();
        // Written by braid-injector: only a record of a real injection is kept.
        let written = "braid-injector writes it when it injects a pod; remove it from the pod (or its template) to have the pod injected";
        let status = annotations.get(STATUS).and_then(|value| {
            serde_json::from_str::<InjectStatus>(value)
                .map_err(|e| {
                    errors.push(bad(
                        STATUS,
                        format!("not what braid-injector records ({e}): {written}"),
                    ));
                })
                .ok()
        });
        if let Some(value) = annotations.get(ORIGINAL_PROBES) {
            if !annotations.contains_key(STATUS) {
                errors.push(bad(
                    ORIGINAL_PROBES,
                    format!("set without braid.dev/status: {written}"),
                ));
            } else if let Err(e) = serde_json::from_str::<BTreeMap<String, Original>>(value) {
                errors.push(bad(
                    ORIGINAL_PROBES,
                    format!("not what braid-injector records ({e}): {written}"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(Self {
                inject,
                exclude_inbound_ports,
                exclude_outbound_ports,
                exclude_outbound_cidrs,
                proxy_cpu,
                proxy_memory,
                init_cpu,
                init_memory,
                log_level,
                outbound_scope,
                prometheus_opt_out,
                access_log,
                trace_collector,
                trace_sampling,
                proxy_limits,
                status,
            })
        } else {
            Err(errors)
        }
    }
}

/// The proxy's own rule for `--log-level` (the same function), so that a filter the
/// proxy would exit on at start, or a typo it would read as a target and log nothing
/// for, is refused before the pod exists.
fn log_filter(value: &str) -> Result<(), LogFilterError> {
    braid_api::log::parse_log_filter(value).map(drop)
}

/// The message for a `braid.dev/` key braid does not know: the closest known name, if
/// one is near, and the list.
fn unknown_key(key: &str) -> String {
    let closest = USER_ANNOTATIONS
        .iter()
        .map(|known| (edit_distance(key, known), *known))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, known)| format!(" (did you mean {known}?)"))
        .unwrap_or_default();
    format!(
        "braid has no such annotation{closest}; the ones a pod may set are {}: rename or remove it",
        USER_ANNOTATIONS.join(", ")
    )
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    match (addr.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 13] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix))
        .unwrap_or(s);
    !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn good_values_parse() {
        let o = Overrides::parse(&annotations(&[
            (EXCLUDE_INBOUND_PORTS, "9090, 9091"),
            (EXCLUDE_OUTBOUND_PORTS, "5432"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/8,fd00::/8"),
            (PROXY_CPU, "250m"),
            (PROXY_MEMORY, "64Mi"),
            (LOG_LEVEL, "debug"),
        ]))
        .unwrap();
        assert_eq!(o.exclude_inbound_ports, [9090, 9091]);
        assert_eq!(o.exclude_outbound_cidrs, ["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(o.proxy_memory.as_deref(), Some("64Mi"));
    }

    #[test]
    fn observability_annotations_parse_and_name_the_default_when_refused() {
        let o = Overrides::parse(&annotations(&[
            (ACCESS_LOG, "json"),
            (
                TRACE_COLLECTOR,
                " http://otel-collector.observability:4318 ",
            ),
            (TRACE_SAMPLING, "0.5"),
        ]))
        .unwrap();
        assert_eq!(o.access_log.as_deref(), Some("json"));
        assert_eq!(
            o.trace_collector.as_deref(),
            Some("http://otel-collector.observability:4318")
        );
        assert_eq!(o.trace_sampling.as_deref(), Some("0.5"));
        // "off" turns off the injector's collector.
        let o = Overrides::parse(&annotations(&[(TRACE_COLLECTOR, " off")])).unwrap();
        assert_eq!(o.trace_collector.as_deref(), Some("off"));
        // Empty means the injector's default.
        let o = Overrides::parse(&annotations(&[
            (ACCESS_LOG, ""),
            (TRACE_COLLECTOR, " "),
            (TRACE_SAMPLING, ""),
        ]))
        .unwrap();
        assert_eq!(
            (o.access_log, o.trace_collector, o.trace_sampling),
            (None, None, None)
        );
        let errs = Overrides::parse(&annotations(&[
            (ACCESS_LOG, "yes"),
            (TRACE_COLLECTOR, "https://otel:4318"),
            (TRACE_SAMPLING, "150"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.annotation.as_str()).collect();
        assert_eq!(names, [ACCESS_LOG, TRACE_COLLECTOR, TRACE_SAMPLING]);
        assert_eq!(
            errs[2].to_string(),
            "annotation braid.dev/trace-sampling: \"150\" is above 100 percent: write a number \
             of percent from 0 to 100, e.g. \"1\", \"0.5\" or \"100\" (a trailing % is \
             accepted; 0 samples no new trace; a request whose caller already decided follows \
             the caller); or remove it for the injector's default (its --trace-sampling)"
        );
        assert!(
            errs[1]
                .message
                .contains("TLS to the collector is not supported yet"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn every_bad_value_is_named() {
        let errs = Overrides::parse(&annotations(&[
            (EXCLUDE_INBOUND_PORTS, "http"),
            (EXCLUDE_OUTBOUND_PORTS, "70000"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0"),
            (PROXY_CPU, "lots"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.annotation.as_str()).collect();
        assert_eq!(
            names,
            [
                EXCLUDE_INBOUND_PORTS,
                EXCLUDE_OUTBOUND_PORTS,
                EXCLUDE_OUTBOUND_CIDRS,
                PROXY_CPU
            ]
        );
        assert!(
            errs[0].to_string().contains("\"http\" is not a port"),
            "{}",
            errs[0]
        );
    }
}
