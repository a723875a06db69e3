//! The pod annotations users set to tune injection, parsed with errors that name the
//! annotation and say how to fix it.

use std::collections::BTreeMap;

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
/// The proxy's log filter.
pub const LOG_LEVEL: &str = "braid.dev/log-level";

/// An annotation with a value braid cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {message}")]
pub struct BadAnnotation {
    /// The annotation.
    pub annotation: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The tuning a pod asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
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
    /// `braid.dev/log-level`.
    pub log_level: Option<String>,
}

impl Overrides {
    /// Reads every braid annotation of a pod; all problems are reported together.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, Vec<BadAnnotation>> {
        let mut errors = Vec::new();
        let get = |name: &str| {
            annotations
                .get(name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let mut ports = |name: &'static str| -> Vec<u16> {
            let Some(value) = get(name) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.parse::<u16>() {
                    Ok(p) if p > 0 => out.push(p),
                    _ => errors.push(BadAnnotation {
                        annotation: name,
                        message: format!("{part:?} is not a port: write comma-separated numbers 1-65535, e.g. \"5432,6379\""),
                    }),
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
                    errors.push(BadAnnotation {
                        annotation: EXCLUDE_OUTBOUND_CIDRS,
                        message: format!(
                            "{part:?} is not a CIDR: write e.g. \"10.0.0.0/8,fd00::/8\""
                        ),
                    });
                }
            }
        }
        let mut quantity = |name: &'static str| -> Option<String> {
            let value = get(name)?;
            if is_quantity(value) {
                Some(value.to_owned())
            } else {
                errors.push(BadAnnotation {
                    annotation: name,
                    message: format!("{value:?} is not a Kubernetes quantity: write e.g. \"100m\" (CPU) or \"64Mi\" (memory)"),
                });
                None
            }
        };
        let proxy_cpu = quantity(PROXY_CPU);
        let proxy_memory = quantity(PROXY_MEMORY);
        let log_level = get(LOG_LEVEL).map(str::to_owned);
        if errors.is_empty() {
            Ok(Self {
                exclude_inbound_ports,
                exclude_outbound_ports,
                exclude_outbound_cidrs,
                proxy_cpu,
                proxy_memory,
                log_level,
            })
        } else {
            Err(errors)
        }
    }
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
    fn every_bad_value_is_named() {
        let errs = Overrides::parse(&annotations(&[
            (EXCLUDE_INBOUND_PORTS, "http"),
            (EXCLUDE_OUTBOUND_PORTS, "70000"),
            (EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0"),
            (PROXY_CPU, "lots"),
        ]))
        .unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.annotation).collect();
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
