//! The proxy's observability settings: its access log, the OpenTelemetry collector it
//! exports traces to and the share of new traces it samples. A pod sets them by
//! annotation, the cluster by the injector's flags (`--proxy-access-log`,
//! `--trace-collector`, `--trace-sampling`); both are checked with the proxy's own rule
//! (the `FromStr` of [`braid_api::telemetry`]'s types, which its flags are typed with),
//! so a value the proxy would refuse at start never reaches a sidecar, and the sidecar
//! gets each in the normal form the proxy reads, in its flag's environment variable.
//!
//! The messages say what is wrong, what is accepted and how to write it; whoever reads
//! the value names where it came from (the annotation or the flag).

use std::fmt::Display;
use std::str::FromStr;

use braid_api::telemetry::{AccessLogFormat, CollectorSetting, SamplingPercent};

/// `"json"`: the proxy writes one JSON line per request to its standard output.
pub const ACCESS_LOG: &str = "braid.dev/access-log";
/// The base URL of the OpenTelemetry collector's OTLP/HTTP endpoint, or `"off"`.
pub const TRACE_COLLECTOR: &str = "braid.dev/trace-collector";
/// The percentage of new traces the proxy samples.
pub const TRACE_SAMPLING: &str = "braid.dev/trace-sampling";

/// The proxy's `--access-log`, as an environment variable.
pub const ACCESS_LOG_ENV: &str = "BRAID_ACCESS_LOG";
/// The proxy's `--trace-collector`, as an environment variable.
pub const TRACE_COLLECTOR_ENV: &str = "BRAID_TRACE_COLLECTOR";
/// The proxy's `--trace-sampling`, as an environment variable.
pub const TRACE_SAMPLING_ENV: &str = "BRAID_TRACE_SAMPLING";

/// The proxy's defaults (no collector is the third: tracing export off).
pub const DEFAULT_ACCESS_LOG: &str = "off";
/// The proxy's default `--trace-sampling`, in percent.
pub const DEFAULT_TRACE_SAMPLING: &str = "1";
/// A collector setting that means none: a pod's `braid.dev/trace-collector: "off"`
/// turns off the cluster's default collector.
pub const TRACE_COLLECTOR_OFF: &str = CollectorSetting::OFF;

/// A value the proxy's observability flags would refuse: what is wrong, what is accepted
/// and how to write it.
pub type TelemetryError = braid_api::telemetry::TelemetryValueError;

/// The value read by the proxy's rule, in its normal form.
fn normal<T>(value: &str) -> Result<String, TelemetryError>
where
    T: FromStr<Err = TelemetryError> + Display,
{
    value.parse::<T>().map(|v| v.to_string())
}

/// An access log setting: exactly `json` or `off` (trimmed). Returns it as the proxy
/// takes it.
pub fn access_log(value: &str) -> Result<String, TelemetryError> {
    normal::<AccessLogFormat>(value)
}

/// A trace sampling percentage: a decimal number from 0 to 100, e.g. `1`, `0.5` or
/// `100`, written with digits and at most one decimal point (no sign or exponent); a
/// trailing `%` is accepted. Returns the number in the proxy's normal form (`5%` is
/// `5`, `100.0` is `100`).
pub fn trace_sampling(value: &str) -> Result<String, TelemetryError> {
    normal::<SamplingPercent>(value)
}

/// `off`, or an OpenTelemetry collector's OTLP/HTTP base URL, `http://host[:port]` with
/// an optional trailing `/`: the proxy posts to `<URL>/v1/traces` itself. The host is a
/// DNS name, an IPv4 address or a bracketed IPv6 address; the port is 1-65535 (OTLP/HTTP's
/// 4318 when there is none). Returns `off` or the URL in the proxy's normal form,
/// `http://host:port` (`http://otel/` is `http://otel:4318`).
pub fn trace_collector(value: &str) -> Result<String, TelemetryError> {
    normal::<CollectorSetting>(value)
}

/// The proxy's `BRAID_TRACE_COLLECTOR` for a collector setting: the URL in its normal
/// form, or none for `off` (the proxy exports nothing without one). A value no rule
/// checked is passed on as written, for the proxy to refuse.
pub fn collector_env(setting: &str) -> Option<String> {
    match setting.parse::<CollectorSetting>() {
        Ok(setting) => setting.into_url().map(|url| url.to_string()),
        Err(_) => Some(setting.trim().to_owned()),
    }
}

/// The value of the proxy's variable for a setting `check` reads (one of
/// [`access_log`] and [`trace_sampling`]): its normal form. A value no rule checked is
/// passed on as written, for the proxy to refuse.
pub fn proxy_env(check: fn(&str) -> Result<String, TelemetryError>, setting: &str) -> String {
    check(setting).unwrap_or_else(|_| setting.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn message<T: std::fmt::Debug>(result: Result<T, TelemetryError>) -> String {
        result.unwrap_err().to_string()
    }

    // The annotation, the proxy's flag and its environment variable cannot drift apart:
    // each annotation is `braid.dev/<flag>`, each variable the injector writes is the
    // one the proxy's `run` reads for that flag, and each default is the flag's.
    #[test]
    fn each_setting_is_the_proxys_flag() {
        let cli = braid_proxy::cli::Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        for (annotation, env, default) in [
            (ACCESS_LOG, ACCESS_LOG_ENV, Some(DEFAULT_ACCESS_LOG)),
            (TRACE_COLLECTOR, TRACE_COLLECTOR_ENV, None),
            (
                TRACE_SAMPLING,
                TRACE_SAMPLING_ENV,
                Some(DEFAULT_TRACE_SAMPLING),
            ),
        ] {
            let flag = annotation.strip_prefix("braid.dev/").unwrap();
            let arg = run
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .unwrap_or_else(|| panic!("braid-proxy run has no --{flag}"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "{flag}");
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(defaults, Vec::from_iter(default), "{flag}");
        }
    }

    // What the injector writes, the proxy's `run` takes, meaning the same.
    #[test]
    fn the_proxy_takes_what_the_injector_writes() {
        use braid_proxy::cli::{Cli, Command};
        use clap::Parser;
        let run = |flags: &[&str]| {
            let argv = ["braid-proxy", "run", "--config", "c.yaml"];
            match Cli::try_parse_from(argv.iter().chain(flags)) {
                Ok(Cli {
                    command: Command::Run(args),
                }) => args.telemetry(),
                other => panic!("{flags:?}: {other:?}"),
            }
        };
        let log = access_log(" json ").unwrap();
        let sampling = trace_sampling("0.50%").unwrap();
        let url = trace_collector("http://otel.observability/").unwrap();
        assert_eq!((log.as_str(), sampling.as_str()), ("json", "0.5"));
        assert_eq!(url, "http://otel.observability:4318");
        let config = run(&[
            "--access-log",
            &log,
            "--trace-sampling",
            &sampling,
            "--trace-collector",
            &url,
        ]);
        assert_eq!(config.access_log, AccessLogFormat::Json);
        assert_eq!(config.sampling.get(), 0.5);
        assert_eq!(config.collector.map(|c| c.to_string()), Some(url));
        let config = run(&[
            "--access-log",
            DEFAULT_ACCESS_LOG,
            "--trace-sampling",
            DEFAULT_TRACE_SAMPLING,
        ]);
        assert_eq!(config.access_log, AccessLogFormat::Off);
        assert_eq!(config.sampling, SamplingPercent::DEFAULT);
        assert_eq!(config.collector, None);
    }

    #[test]
    fn access_log_is_json_or_off() {
        assert_eq!(access_log("json").unwrap(), "json");
        assert_eq!(access_log(" off ").unwrap(), "off");
        assert_eq!(access_log(DEFAULT_ACCESS_LOG).unwrap(), "off");
        for bad in ["JSON", "on", "true", "text", "", "json,off"] {
            let m = message(access_log(bad));
            assert!(
                m.contains(&format!("{bad:?} is neither \"json\" nor \"off\"")),
                "{m}"
            );
        }
    }

    #[test]
    fn sampling_is_a_percent_from_0_to_100_in_the_proxys_form() {
        for (good, normal) in [
            ("0", "0"),
            ("1", "1"),
            ("0.5", "0.5"),
            ("00.25", "0.25"),
            ("100", "100"),
            ("100.0", "100"),
            ("99.999", "99.999"),
            (" 5 ", "5"),
            ("5%", "5"),
            (" 0.5 % ", "0.5"),
        ] {
            assert_eq!(trace_sampling(good).unwrap(), normal, "{good}");
        }
        assert_eq!(trace_sampling(DEFAULT_TRACE_SAMPLING).unwrap(), "1");
        for (bad, says) in [
            ("-1", "is negative"),
            ("101", "above 100"),
            ("1e2", "not a plain decimal"),
            ("lots", "not a number"),
            ("5%%", "a trailing % is accepted"),
        ] {
            let m = message(trace_sampling(bad));
            assert!(
                m.contains(says) && m.contains("from 0 to 100"),
                "{bad}: {m}"
            );
        }
    }

    #[test]
    fn a_collector_is_off_or_an_http_base_url_in_the_proxys_form() {
        for (good, normal) in [
            (
                "http://otel-collector.observability:4318",
                "http://otel-collector.observability:4318",
            ),
            ("http://otel/", "http://otel:4318"),
            ("http://[::1]", "http://[::1]:4318"),
            (" off ", "off"),
        ] {
            assert_eq!(trace_collector(good).unwrap(), normal, "{good}");
        }
        for (bad, says) in [
            (
                "https://otel:4318",
                "TLS to the collector is not supported yet",
            ),
            ("otel:4318", "\"http://otel:4318\""),
            ("http://otel:4318/v1/traces", "leave out /v1/traces"),
            ("http://otel:99999", "is not a port"),
            ("OFF", "write \"off\" (lowercase)"),
        ] {
            let m = message(trace_collector(bad));
            assert!(m.contains(says), "{bad}: {m}");
        }
    }

    #[test]
    fn the_sidecar_gets_the_normal_form_and_no_collector_for_off() {
        assert_eq!(collector_env("off"), None);
        assert_eq!(
            collector_env(" http://otel/ ").as_deref(),
            Some("http://otel:4318")
        );
        assert_eq!(collector_env("nonsense").as_deref(), Some("nonsense"));
        assert_eq!(proxy_env(trace_sampling, "0.5%"), "0.5");
        assert_eq!(proxy_env(access_log, " json"), "json");
        assert_eq!(proxy_env(trace_sampling, "lots "), "lots");
    }
}
