//! The proxy's observability settings as flags and pod annotations write them, read by
//! one rule in the proxy (its flags) and the injector (the annotations and flags it
//! checks at admission and start-up): the access-log format, the trace collector's
//! address (or `off`) and the share of new traces sampled.
//!
//! Each error says what is wrong, what is accepted and how to write it; whoever reads the
//! value names where it came from (the flag or the annotation). Each value's `Display`
//! is its normal form, which the same rule reads back as the same value: `5%` is `5`,
//! `http://otel/` is `http://otel:4318`.

use std::fmt;
use std::str::FromStr;

/// A setting that could not be read; the message says what is wrong, what is accepted
/// and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TelemetryValueError {
    message: String,
}

fn refuse<T>(message: String) -> Result<T, TelemetryValueError> {
    Err(TelemetryValueError { message })
}

/// Whether and how the proxy writes an access log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// No access log.
    #[default]
    Off,
    /// One JSON object per request, a line each, on standard output.
    Json,
}

impl FromStr for AccessLogFormat {
    type Err = TelemetryValueError;

    /// Exactly `json` or `off` (trimmed; lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self::Off),
            "json" => Ok(Self::Json),
            value => refuse(format!(
                "{value:?} is neither \"json\" nor \"off\": write \"json\" for one JSON line per \
                 request on the proxy's standard output, or \"off\" (lowercase)"
            )),
        }
    }
}

impl fmt::Display for AccessLogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Json => "json",
        })
    }
}

/// An OpenTelemetry collector's OTLP/HTTP address, `http://host:port`; spans go to
/// `<it>/v1/traces`.
///
/// It is read from an OTLP/HTTP base URL, `http://host[:port]` with an optional trailing
/// `/` (the proxy posts to `/v1/traces` itself). The host is a DNS name, an IPv4 address
/// or a bracketed IPv6 address; the port is 1-65535, [`OTLP_HTTP_PORT`] when there is
/// none. `https://`, other schemes, paths, queries, fragments and credentials are
/// refused, each with how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    /// Its host name or address (an IPv6 address without brackets).
    pub host: String,
    /// Its port (4318, OTLP/HTTP's, when the URL names none).
    pub port: u16,
}

/// OTLP/HTTP's port.
pub const OTLP_HTTP_PORT: u16 = 4318;

/// How messages show a collector's address.
const COLLECTOR_EXAMPLE: &str = "e.g. \"http://otel-collector.observability:4318\"";

impl FromStr for CollectorUrl {
    type Err = TelemetryValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = s.trim();
        let example = COLLECTOR_EXAMPLE;
        if value.is_empty() {
            return refuse(format!(
                "the collector's URL is empty: write its OTLP/HTTP base URL, {example}"
            ));
        }
        let Some(rest) = value.strip_prefix("http://") else {
            let scheme = value.split_once("://").map(|(s, _)| s);
            return match scheme {
                Some(s) if s.eq_ignore_ascii_case("https") => refuse(format!(
                    "{value:?} is https: TLS to the collector is not supported yet; run a \
                     collector sidecar or node agent the proxy reaches over plain http (it \
                     forwards over TLS) and write its http:// URL, {example}"
                )),
                Some(s) => refuse(format!(
                    "{value:?} is not an http:// URL (scheme {s:?}): the proxy exports OTLP \
                     over HTTP only; write http://host:port, {example}"
                )),
                None => refuse(format!(
                    "{value:?} has no scheme: write the collector's OTLP/HTTP base URL \
                     starting with http://, e.g. \"http://{value}\" or {example}"
                )),
            };
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let base = format!("http://{authority}");
        if path.contains(['?', '#']) {
            return refuse(format!(
                "{value:?} has a query or fragment: write the base URL alone, {base:?}"
            ));
        }
        if !path.is_empty() && path != "/" {
            let posted = if path.trim_end_matches('/') == "/v1/traces" {
                " (so leave out /v1/traces)"
            } else {
                ""
            };
            return refuse(format!(
                "{value:?} has the path {path:?}: the proxy posts to <URL>/v1/traces \
                 itself{posted}; write the base URL without a path, {base:?}"
            ));
        }
        if authority.contains('@') {
            return refuse(format!(
                "{value:?} has credentials (user@): the proxy sends none to the collector; \
                 write http://host:port, {example}"
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((ip, after)) = bracketed.split_once(']') else {
                return refuse(format!(
                    "{value:?} has an IPv6 address without its closing ]: write e.g. \
                     \"http://[fd00::1]:4318\""
                ));
            };
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return refuse(format!(
                    "{value:?}: {ip:?} is not an IPv6 address: write e.g. \
                     \"http://[fd00::1]:4318\""
                ));
            }
            match after {
                "" => (ip, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (ip, Some(port)),
                    None => {
                        return refuse(format!(
                            "{value:?}: expected :port after the IPv6 address, write e.g. \
                             \"http://[fd00::1]:4318\""
                        ));
                    }
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return refuse(format!(
                "{value:?} has no host: write the collector's host (a Service name works), \
                 {example}"
            ));
        }
        if !authority.starts_with('[') && !is_host(host) {
            return refuse(format!(
                "{value:?}: {host:?} is not a host name or IPv4 address (letters, digits, - \
                 and ., e.g. otel-collector.observability; an IPv6 address goes in \
                 brackets): {example}"
            ));
        }
        let port = match port {
            None => OTLP_HTTP_PORT,
            Some(port) => match port.parse::<u16>() {
                Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
                _ => {
                    return refuse(format!(
                        "{value:?}: {port:?} is not a port: write a number from 1 to 65535 \
                         after the host (collectors take OTLP/HTTP on 4318), {example}"
                    ));
                }
            },
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// A DNS name (labels of letters, digits and `-`, not starting or ending with `-`,
/// separated by single dots, an optional final dot) or an IPv4 address, which is one too.
fn is_host(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for CollectorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "http://[{}]:{}", self.host, self.port),
            false => write!(f, "http://{}:{}", self.host, self.port),
        }
    }
}

/// A trace collector setting: a collector's URL, or `off` for none. `off` lets a pod
/// turn off the cluster's default collector; to the proxy it is the same as no
/// `--trace-collector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollectorSetting {
    /// No collector: no trace export.
    Off,
    /// Spans go to this collector.
    Collector(CollectorUrl),
}

impl CollectorSetting {
    /// How `off` is written.
    pub const OFF: &'static str = "off";

    /// The collector, if there is one.
    pub fn url(&self) -> Option<&CollectorUrl> {
        match self {
            Self::Off => None,
            Self::Collector(url) => Some(url),
        }
    }

    /// The collector, if there is one.
    pub fn into_url(self) -> Option<CollectorUrl> {
        match self {
            Self::Off => None,
            Self::Collector(url) => Some(url),
        }
    }
}

impl From<CollectorSetting> for Option<CollectorUrl> {
    fn from(setting: CollectorSetting) -> Self {
        setting.into_url()
    }
}

impl FromStr for CollectorSetting {
    type Err = TelemetryValueError;

    /// `off` (trimmed; lowercase), else a [`CollectorUrl`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            Self::OFF => Ok(Self::Off),
            value if value.eq_ignore_ascii_case(Self::OFF) => refuse(format!(
                "{value:?} is not \"off\": write \"off\" (lowercase) for no trace export, or \
                 the collector's OTLP/HTTP base URL, {COLLECTOR_EXAMPLE}"
            )),
            value => value.parse().map(Self::Collector),
        }
    }
}

impl fmt::Display for CollectorSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str(Self::OFF),
            Self::Collector(url) => url.fmt(f),
        }
    }
}

/// The share of new traces sampled, in percent (0 to 100).
///
/// It is read from a plain decimal number from 0 to 100, e.g. `1`, `0.5` or `100`:
/// digits and at most one decimal point, no sign, exponent, NaN or infinity; a trailing
/// `%` is accepted.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct SamplingPercent(f64);

impl SamplingPercent {
    /// Istio's default: 1 % of new traces.
    pub const DEFAULT: Self = Self(1.0);

    /// The percentage.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether a new trace is sampled, given a roll uniform in [0, 1).
    pub fn samples(self, roll: f64) -> bool {
        roll * 100.0 < self.0
    }
}

impl Default for SamplingPercent {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for SamplingPercent {
    type Err = TelemetryValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let written = s.trim();
        let value = written.strip_suffix('%').unwrap_or(written).trim_end();
        let how = "write a number of percent from 0 to 100, e.g. \"1\", \"0.5\" or \"100\" \
                   (a trailing % is accepted; 0 samples no new trace; a request whose caller \
                   already decided follows the caller)";
        let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let decimal =
            !whole.is_empty() && digits(whole) && digits(fraction) && !value.ends_with('.');
        let Ok(percent) = value.parse::<f64>() else {
            return refuse(format!("{written:?} is not a number: {how}"));
        };
        if value.starts_with('-') {
            return refuse(format!("{written:?} is negative: {how}"));
        }
        if !decimal {
            return refuse(format!(
                "{written:?} is not a plain decimal number (digits and at most one decimal \
                 point, no sign, exponent, NaN or infinity): {how}"
            ));
        }
        if !(0.0..=100.0).contains(&percent) {
            return refuse(format!("{written:?} is above 100 percent: {how}"));
        }
        Ok(Self(percent))
    }
}

impl fmt::Display for SamplingPercent {
    /// A plain decimal (Rust never writes an `f64` with an exponent here), read back as
    /// the same number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: fmt::Debug>(result: Result<T, TelemetryValueError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn access_log_is_json_or_off() {
        assert_eq!("json".parse(), Ok(AccessLogFormat::Json));
        assert_eq!(" off ".parse(), Ok(AccessLogFormat::Off));
        assert_eq!(AccessLogFormat::Json.to_string(), "json");
        assert_eq!(AccessLogFormat::default().to_string(), "off");
        for bad in ["JSON", "on", "true", "text", "", "json,off"] {
            let m = message(bad.parse::<AccessLogFormat>());
            assert_eq!(
                m,
                format!(
                    "{bad:?} is neither \"json\" nor \"off\": write \"json\" for one JSON line \
                     per request on the proxy's standard output, or \"off\" (lowercase)"
                )
            );
        }
    }

    #[test]
    fn sampling_is_a_percent_from_0_to_100() {
        for (good, percent) in [
            ("0", 0.0),
            ("1", 1.0),
            ("0.5", 0.5),
            ("00.25", 0.25),
            ("100", 100.0),
            ("100.0", 100.0),
            ("99.999", 99.999),
            (" 5 ", 5.0),
        ] {
            assert_eq!(good.parse::<SamplingPercent>().unwrap().get(), percent);
        }
        assert_eq!("1".parse::<SamplingPercent>(), Ok(SamplingPercent::DEFAULT));
        for (bad, says) in [
            ("-1", "is negative"),
            ("-0", "is negative"),
            ("-0.5", "is negative"),
            ("100.5", "above 100"),
            ("101", "above 100"),
            ("1e2", "not a plain decimal"),
            ("NaN", "not a plain decimal"),
            ("nan", "not a plain decimal"),
            ("inf", "not a plain decimal"),
            ("+5", "not a plain decimal"),
            (".5", "not a plain decimal"),
            ("5.", "not a plain decimal"),
            ("lots", "not a number"),
            ("all", "not a number"),
            ("", "not a number"),
            ("1.2.3", "not a number"),
            ("0,5", "not a number"),
        ] {
            let m = message(bad.parse::<SamplingPercent>());
            assert!(
                m.starts_with(&format!("{bad:?} "))
                    && m.contains(says)
                    && m.contains("from 0 to 100"),
                "{bad}: {m}"
            );
        }
        assert_eq!(
            message("150".parse::<SamplingPercent>()),
            "\"150\" is above 100 percent: write a number of percent from 0 to 100, e.g. \
             \"1\", \"0.5\" or \"100\" (a trailing % is accepted; 0 samples no new trace; a \
             request whose caller already decided follows the caller)"
        );
    }

    #[test]
    fn a_percent_sign_is_accepted_and_left_out() {
        assert_eq!("5%".parse::<SamplingPercent>().unwrap().to_string(), "5");
        assert_eq!(
            " 0.5 % ".parse::<SamplingPercent>().unwrap().to_string(),
            "0.5"
        );
        assert_eq!("100%".parse::<SamplingPercent>().unwrap().get(), 100.0);
        for bad in ["%", "101%", "5%%", "-1%"] {
            let m = message(bad.parse::<SamplingPercent>());
            assert!(
                m.starts_with(&format!("{bad:?} ")) && m.contains("a trailing % is accepted"),
                "{bad}: {m}"
            );
        }
    }

    #[test]
    fn sampling_is_written_as_a_plain_decimal_read_back_the_same() {
        for (written, normal) in [
            ("100.0", "100"),
            ("00.25", "0.25"),
            ("0.5%", "0.5"),
            ("0", "0"),
            ("0.000000000000000000001", "0.000000000000000000001"),
            ("33.333333333333333333", "33.333333333333336"),
        ] {
            let p: SamplingPercent = written.parse().unwrap();
            assert_eq!(p.to_string(), normal, "{written}");
            assert_eq!(normal.parse::<SamplingPercent>(), Ok(p), "{written}");
        }
    }

    #[test]
    fn sampling_rolls() {
        let all = SamplingPercent(100.0);
        let none = SamplingPercent(0.0);
        assert!(all.samples(0.999_999) && !none.samples(0.0));
        assert!(SamplingPercent::DEFAULT.samples(0.009) && !SamplingPercent::DEFAULT.samples(0.01));
    }

    #[test]
    fn a_collector_is_an_http_base_url() {
        for (good, normal) in [
            (
                "http://otel-collector.observability:4318",
                "http://otel-collector.observability:4318",
            ),
            (
                "http://otel-collector.observability:4318/",
                "http://otel-collector.observability:4318",
            ),
            ("http://otel-collector", "http://otel-collector:4318"),
            ("http://otel/", "http://otel:4318"),
            ("http://10.0.0.7:4318", "http://10.0.0.7:4318"),
            ("http://[fd00::1]:4318", "http://[fd00::1]:4318"),
            ("http://[fd00::1]:9", "http://[fd00::1]:9"),
            ("http://[::1]", "http://[::1]:4318"),
            (
                "http://otel.observability.svc.cluster.local.:4318",
                "http://otel.observability.svc.cluster.local.:4318",
            ),
            (" http://localhost:4318 ", "http://localhost:4318"),
        ] {
            let url: CollectorUrl = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(url.to_string(), normal, "{good}");
            assert_eq!(normal.parse(), Ok(url), "{good}");
        }
        let v6: CollectorUrl = "http://[fd00::1]:9".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::1", 9));
    }

    #[test]
    fn a_collector_over_tls_is_refused_with_the_way_around() {
        let m = message("https://otel-collector:4318".parse::<CollectorUrl>());
        assert!(
            m.contains("TLS to the collector is not supported yet")
                && m.contains("collector sidecar or node agent")
                && m.contains("http://"),
            "{m}"
        );
        assert!(message("HTTPS://x:4318".parse::<CollectorUrl>()).contains("TLS"));
    }

    #[test]
    fn each_bad_collector_says_what_is_wrong() {
        for (bad, says) in [
            ("otel-collector:4318", "\"http://otel-collector:4318\""),
            ("", "is empty"),
            ("grpc://otel:4317", "not an http:// URL"),
            ("http://otel:4318/v1/traces", "leave out /v1/traces"),
            ("http://otel:4318/otlp", "has the path \"/otlp\""),
            ("http://otel:4318/?x=1", "query or fragment"),
            ("http://otel:4318#x", "query or fragment"),
            ("http://", "has no host"),
            ("http://:4318", "has no host"),
            ("http://otel:", "\"\" is not a port"),
            ("http://otel:0", "\"0\" is not a port"),
            ("http://otel:65536", "\"65536\" is not a port"),
            ("http://otel:+80", "\"+80\" is not a port"),
            ("http://otel:http", "\"http\" is not a port"),
            ("http://user:pw@otel:4318", "credentials"),
            ("http://otel_collector:4318", "not a host name"),
            ("http://a..b:4318", "not a host name"),
            ("http://-otel:4318", "not a host name"),
            ("http://fd00::1:4318", "is not a port"),
            ("http://[fd00::1:4318", "closing ]"),
            ("http://[fd00::zz]:4318", "not an IPv6 address"),
            ("http://[fd00::1]4318", "expected :port"),
        ] {
            let m = message(bad.parse::<CollectorUrl>());
            assert!(m.contains(says), "{bad}: {m}");
            assert!(
                bad.is_empty() || m.starts_with(&format!("{:?}", bad.trim())),
                "{bad}: {m}"
            );
            // The setting reads a URL by the same rule.
            assert_eq!(message(bad.parse::<CollectorSetting>()), m, "{bad}");
        }
    }

    #[test]
    fn a_collector_setting_is_off_or_a_url() {
        assert_eq!(" off ".parse(), Ok(CollectorSetting::Off));
        assert_eq!(CollectorSetting::Off.to_string(), "off");
        assert_eq!(CollectorSetting::Off.url(), None);
        let on: CollectorSetting = "http://otel/".parse().unwrap();
        assert_eq!(on.to_string(), "http://otel:4318");
        assert_eq!(
            Option::<CollectorUrl>::from(on),
            Some(CollectorUrl {
                host: "otel".into(),
                port: OTLP_HTTP_PORT
            })
        );
        for bad in ["OFF", "Off"] {
            let m = message(bad.parse::<CollectorSetting>());
            assert!(m.contains("write \"off\" (lowercase)"), "{bad}: {m}");
        }
        // A URL alone is not "off".
        let m = message("off".parse::<CollectorUrl>());
        assert!(m.contains("has no scheme"), "{m}");
        let m = message("".parse::<CollectorSetting>());
        assert!(m.contains("is empty"), "{m}");
    }
}
