//! The proxy's connection limits a pod may tune by annotation: each is the proxy's own
//! flag (`braid.dev/idle-timeout` is `--idle-timeout`), checked with the proxy's own
//! rule at admission and handed to the sidecar in that flag's environment variable.

use braid_api::duration::{DurationError, parse_duration};

/// What values a limit takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A duration with a unit: `500ms`, `10s`, `1m30s`.
    Duration,
    /// A whole number from `min` to `max`.
    Count {
        /// The smallest accepted.
        min: u32,
        /// The largest accepted.
        max: u32,
    },
}

/// One tunable limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The pod annotation.
    pub annotation: &'static str,
    /// The proxy's flag, without the dashes; also the annotation's name.
    pub flag: &'static str,
    /// The environment variable the proxy reads the flag from.
    pub env: &'static str,
    /// What it takes.
    pub kind: Kind,
    /// The proxy's default, for messages and docs/proxy.md.
    pub default: &'static str,
}

/// A [`Limit`] whose annotation is `braid.dev/<flag>`.
macro_rules! limit {
    ($flag:literal, $env:literal, $kind:expr, $default:literal) => {
        Limit {
            annotation: concat!("braid.dev/", $flag),
            flag: $flag,
            env: $env,
            kind: $kind,
            default: $default,
        }
    };
}

/// Every limit, in the order messages and docs/proxy.md list them.
pub const LIMITS: [Limit; 8] = [
    limit!(
        "header-read-timeout",
        "BRAID_HEADER_READ_TIMEOUT",
        Kind::Duration,
        "10s"
    ),
    limit!("idle-timeout", "BRAID_IDLE_TIMEOUT", Kind::Duration, "60s"),
    limit!(
        "request-body-timeout",
        "BRAID_REQUEST_BODY_TIMEOUT",
        Kind::Duration,
        "60s"
    ),
    limit!(
        "response-timeout",
        "BRAID_RESPONSE_TIMEOUT",
        Kind::Duration,
        "5m"
    ),
    limit!(
        "upstream-idle-timeout",
        "BRAID_UPSTREAM_IDLE_TIMEOUT",
        Kind::Duration,
        "4s"
    ),
    limit!(
        "tcp-idle-timeout",
        "BRAID_TCP_IDLE_TIMEOUT",
        Kind::Duration,
        "1h"
    ),
    limit!(
        "max-header-bytes",
        "BRAID_MAX_HEADER_BYTES",
        Kind::Count {
            min: 1024,
            max: 1_048_576
        },
        "65536"
    ),
    limit!(
        "max-connections",
        "BRAID_MAX_CONNECTIONS",
        Kind::Count {
            min: 1,
            max: u32::MAX
        },
        "20000"
    ),
];

/// A limit a pod set: the sidecar's environment variable and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitOverride {
    /// The environment variable of the proxy's flag.
    pub env: &'static str,
    /// The value, as the pod wrote it (trimmed).
    pub value: String,
}

/// A value a limit's proxy flag would refuse. The message names the flag, its default
/// and what it takes; the annotation is named by whoever reads the pod's annotations.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A duration limit whose value is not a duration.
    #[error(
        "{source}; it sets the proxy's --{flag}, default {default}; or remove it for the default"
    )]
    Duration {
        /// The proxy's flag ([`Limit::flag`]).
        flag: &'static str,
        /// Its default ([`Limit::default`]).
        default: &'static str,
        /// Why the value is not a duration.
        source: DurationError,
    },
    /// A count limit whose value is not a whole number in its range.
    #[error(
        "{value:?} is not a whole number from {min} to {max}: it sets the proxy's --{flag}, \
         default {default}; write e.g. \"{default}\", or remove it for the default"
    )]
    Count {
        /// The proxy's flag ([`Limit::flag`]).
        flag: &'static str,
        /// Its default ([`Limit::default`]).
        default: &'static str,
        /// The value, as the pod wrote it (trimmed).
        value: String,
        /// The smallest accepted.
        min: u32,
        /// The largest accepted.
        max: u32,
    },
}

impl Limit {
    /// Checks `value` as the proxy's flag would; the error says what is accepted.
    pub fn check(&self, value: &str) -> Result<LimitOverride, LimitError> {
        let ok = || LimitOverride {
            env: self.env,
            value: value.to_owned(),
        };
        match self.kind {
            Kind::Duration => match parse_duration(value) {
                Ok(_) => Ok(ok()),
                Err(source) => Err(LimitError::Duration {
                    flag: self.flag,
                    default: self.default,
                    source,
                }),
            },
            Kind::Count { min, max } => match value.parse::<u32>() {
                Ok(n) if (min..=max).contains(&n) => Ok(ok()),
                _ => Err(LimitError::Count {
                    flag: self.flag,
                    default: self.default,
                    value: value.to_owned(),
                    min,
                    max,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    // The annotation, the proxy's flag and its environment variable cannot drift apart:
    // each limit's env is the one the proxy's `run` reads for that flag, and its default
    // is the flag's.
    #[test]
    fn each_limit_is_the_proxys_flag() {
        let cli = braid_proxy::cli::Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        for limit in LIMITS {
            assert_eq!(limit.annotation, format!("braid.dev/{}", limit.flag));
            let arg = run
                .get_arguments()
                .find(|a| a.get_long() == Some(limit.flag))
                .unwrap_or_else(|| panic!("braid-proxy run has no --{}", limit.flag));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(limit.env),
                "{}",
                limit.flag
            );
            let default: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(default, [limit.default], "{}", limit.flag);
            // The default is a value the annotation takes.
            assert!(limit.check(limit.default).is_ok(), "{}", limit.flag);
        }
    }

    #[test]
    fn values_are_checked_as_the_proxy_checks_them() {
        let idle = LIMITS[1];
        assert_eq!(
            idle.check("90s"),
            Ok(LimitOverride {
                env: "BRAID_IDLE_TIMEOUT",
                value: "90s".into()
            })
        );
        let e = idle.check("90").unwrap_err().to_string();
        assert!(e.contains("the unit is missing"), "{e}");
        assert!(e.contains("--idle-timeout, default 60s"), "{e}");
        let max = LIMITS[7];
        assert!(max.check("500").is_ok());
        for bad in ["0", "-1", "lots", "1e3"] {
            let e = max.check(bad).unwrap_err().to_string();
            assert!(e.contains("from 1 to"), "{e}");
        }
        assert!(LIMITS[6].check("512").is_err());
    }

    // The whole message of each kind, as a pod's author reads it after
    // "annotation braid.dev/<flag>: ".
    #[test]
    fn each_kind_of_refusal_says_the_flag_its_default_and_the_fix() {
        assert_eq!(
            LIMITS[1].check("90").unwrap_err().to_string(),
            "\"90\" is not a duration: write a number with a unit, e.g. 500ms, 10s, 1m30s \
             (the unit is missing); it sets the proxy's --idle-timeout, default 60s; or remove \
             it for the default"
        );
        assert_eq!(
            LIMITS[6].check("512").unwrap_err().to_string(),
            "\"512\" is not a whole number from 1024 to 1048576: it sets the proxy's \
             --max-header-bytes, default 65536; write e.g. \"65536\", or remove it for the \
             default"
        );
    }
}
