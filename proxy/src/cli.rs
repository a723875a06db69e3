//! Command-line interface of `braid-proxy`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use braid_api::ports;
use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::control::OperatorUrl;
use crate::iptables::CaptureArgs;

/// braid's sidecar proxy.
#[derive(Debug, Parser)]
#[command(name = "braid-proxy", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once at start-up: the size of `RunArgs` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the proxy.
    Run(RunArgs),
    /// Install the pod's iptables capture rules (runs in the braid-init container).
    Iptables(CaptureArgs),
    /// Wait until the local proxy reports ready (for a postStart hook).
    WaitReady(WaitReadyArgs),
    /// Wait until the app has exited: none of its ports accepts connections, it answers
    /// no request and has no outbound connection open, for a quiet period (for the proxy's preStop hook
    /// when it is not a native sidecar, so the app's last calls still go out).
    WaitAppExit(WaitAppExitArgs),
    /// Run the proxy as a child process and replace it in place, without dropping a
    /// connection, when `braid-proxy upgrade` asks (the container's main process, or a
    /// service's on a host): `braid-proxy supervise --dir DIR -- --config proxy.yaml …`.
    Supervise(SuperviseArgs),
    /// Replace the proxy a `braid-proxy supervise` runs with another binary; waits until
    /// the new one has taken over and the old one has exited.
    Upgrade(UpgradeArgs),
}

/// Flags of `braid-proxy supervise`.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The supervisor's directory (created if missing; only the proxy's user should be
    /// able to write it): its control socket, the proxies' handover socket, and the
    /// binaries it installs.
    #[arg(long, env = "BRAID_SUPERVISE_DIR", value_name = "DIR")]
    pub dir: PathBuf,
    /// The arguments of `braid-proxy run`, after `--` (without --handover-socket, which
    /// the supervisor sets).
    #[arg(last = true, required = true, value_name = "RUN ARGS")]
    pub run: Vec<std::ffi::OsString>,
}

/// Flags of `braid-proxy upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The directory of the `braid-proxy supervise` to upgrade.
    #[arg(long, env = "BRAID_SUPERVISE_DIR", value_name = "DIR")]
    pub dir: PathBuf,
    /// The new proxy binary (the supervisor copies it before running it).
    #[arg(long, value_name = "PATH")]
    pub binary: PathBuf,
    /// The binary's SHA-256 (as `sha256sum` prints it): a binary of another digest is
    /// refused and nothing changes.
    #[arg(long, value_name = "HEX", value_parser = |s: &str| crate::supervise::request::parse_sha256(s))]
    pub sha256: Option<String>,
    /// How long to wait for the outcome (the old proxy finishes its requests in flight
    /// before it exits).
    #[arg(long, default_value = "5m", value_parser = crate::limits::parse_duration)]
    pub timeout: Duration,
}

/// Flags of `braid-proxy run`. The config comes from exactly one of `--config` and
/// `--operator`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("config_source").required(true).args(["config", "operator"])))]
pub struct RunArgs {
    /// Load the generated ProxyConfig (YAML or JSON) from this file and apply each change.
    #[arg(long, env = "BRAID_CONFIG")]
    pub config: Option<PathBuf>,
    /// Stream config from the operator at this https://host:port URL (port 443 if omitted)
    /// and report each applied version to it. The proxy serves while it connects and
    /// reconnects; it is ready once the first config is applied. Needs --operator-ca,
    /// --pod-name and --pod-namespace.
    #[arg(
        long,
        env = "BRAID_OPERATOR",
        value_name = "URL",
        conflicts_with = "config",
        requires_all = ["operator_ca", "pod_name", "pod_namespace"]
    )]
    pub operator: Option<OperatorUrl>,
    /// With --config, on a host the operator does not certify (a VM, a gateway, a
    /// benchmark): the PEM certificate chain of this proxy's SPIFFE identity, used for
    /// mesh mTLS. Needs --identity-key; peers are verified against the config's
    /// trustBundle. With --operator the proxy makes its own key and gets its certificate
    /// from the operator instead.
    #[arg(
        long,
        env = "BRAID_IDENTITY_CERT",
        value_name = "FILE",
        conflicts_with = "operator",
        requires = "identity_key"
    )]
    pub identity_cert: Option<PathBuf>,
    /// The PKCS#8 PEM private key of --identity-cert.
    #[arg(
        long,
        env = "BRAID_IDENTITY_KEY",
        value_name = "FILE",
        requires = "identity_cert"
    )]
    pub identity_key: Option<PathBuf>,
    /// PEM file of the certificates that sign the operator's serving certificate (the
    /// mesh CA). Re-read on every connect.
    #[arg(long, env = "BRAID_OPERATOR_CA", value_name = "FILE")]
    pub operator_ca: Option<PathBuf>,
    /// With --operator: which of the mesh's services this proxy holds. `on-demand`: only
    /// those its app calls, each found the first time it is called (one round trip to
    /// the operator, once; an address no service has passes through unchanged); `all`:
    /// every service, as a gateway calling anything needs.
    #[arg(long, env = "BRAID_SERVICES", value_enum, default_value_t = Services::OnDemand)]
    pub services: Services,
    /// With --services on-demand: a service the app has had no connection open to for
    /// this long (a duration with a unit, e.g. `30m`) is let go of, and found again if
    /// it is called again. Those its workload's outbound scope names stay.
    #[arg(long, env = "BRAID_SERVICES_IDLE", default_value = "1h", value_parser = crate::limits::parse_duration)]
    pub services_idle: Duration,
    /// The pod's projected ServiceAccount token (audience braid), sent to the operator.
    /// Re-read on every connect: the kubelet rotates it.
    #[arg(
        long,
        env = "BRAID_TOKEN_FILE",
        value_name = "PATH",
        default_value = "/var/run/secrets/braid.dev/token"
    )]
    pub token_file: PathBuf,
    /// The name of the pod this proxy runs in (downward API: metadata.name).
    #[arg(long, env = "BRAID_POD_NAME", value_name = "NAME")]
    pub pod_name: Option<String>,
    /// The namespace of the pod this proxy runs in (downward API: metadata.namespace).
    #[arg(long, env = "BRAID_POD_NAMESPACE", value_name = "NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The service account of the pod this proxy runs in (downward API:
    /// spec.serviceAccountName). With --operator, a certificate naming another workload
    /// is refused.
    #[arg(long, env = "BRAID_SERVICE_ACCOUNT", value_name = "NAME")]
    pub service_account: Option<String>,
    /// Outbound capture listener (iptables redirects the app's outgoing TCP here).
    #[arg(long, env = "BRAID_OUTBOUND_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::OUTBOUND_PORT)))]
    pub outbound_addr: SocketAddr,
    /// Inbound capture listener (iptables redirects incoming TCP here).
    #[arg(long, env = "BRAID_INBOUND_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::INBOUND_PORT)))]
    pub inbound_addr: SocketAddr,
    /// Admin listener (/config_dump, /metrics, /ready, /healthz, POST /logging).
    #[arg(long, env = "BRAID_ADMIN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::ADMIN_PORT)))]
    pub admin_addr: SocketAddr,
    /// Health listener for kubelet probes (/ready).
    #[arg(long, env = "BRAID_HEALTH_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::HEALTH_PORT)))]
    pub health_addr: SocketAddr,
    /// Do not open the capture listeners (hosts without iptables: only the config's
    /// explicit listeners run).
    #[arg(long, env = "BRAID_NO_CAPTURE")]
    pub no_capture: bool,
    /// Source address of connections to the app on the inbound side; the capture rules
    /// let it through. Falls back to the kernel's choice when it cannot be bound.
    #[arg(long, env = "BRAID_INBOUND_SOURCE", default_value_t = IpAddr::V4(ports::INBOUND_SOURCE))]
    pub inbound_source: std::net::IpAddr,
    /// Worker threads; default: the container's CPU limit (cgroup), else the CPU count.
    #[arg(long, env = "BRAID_WORKERS")]
    pub workers: Option<usize>,
    /// On SIGTERM, stop accepting and let in-flight work finish for at most this many seconds.
    #[arg(long, env = "BRAID_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// Hitless upgrade: offer this proxy's listeners, config and identity to a successor
    /// on this Unix socket (created mode 0600; put it in a directory only the proxy's
    /// container shares). A proxy started with the same path while another runs there
    /// takes over from it: it accepts on the same sockets, and the running proxy stops
    /// accepting, hands over its idle connections, finishes the rest and exits.
    #[arg(long, env = "BRAID_HANDOVER_SOCKET", value_name = "PATH")]
    pub handover_socket: Option<PathBuf>,
    /// The cgroup v2 directory whose CPU overload protection's `cpu` signal reads
    /// (`cpu.stat` against `cpu.max`); without one, the proxy's own CPU time is used.
    #[arg(long, env = "BRAID_CGROUP_DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_dir: PathBuf,
    /// Upstream connect timeout in milliseconds (a timeout answers 504).
    #[arg(long, env = "BRAID_CONNECT_TIMEOUT_MS", default_value_t = 3000)]
    pub connect_timeout_ms: u64,
    /// How long a caller may take to send a request head, from its first byte (or from
    /// a new connection's accept); then it gets 408 and the connection closes.
    #[arg(long, env = "BRAID_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = crate::limits::parse_duration)]
    pub header_read_timeout: Duration,
    /// A downstream connection with no request in progress (HTTP/2: no open stream) is
    /// closed after this long.
    #[arg(long, env = "BRAID_IDLE_TIMEOUT", default_value = "60s", value_parser = crate::limits::parse_duration)]
    pub idle_timeout: Duration,
    /// A request body that makes no progress for this long is abandoned with 408 (the
    /// endpoint is not blamed).
    #[arg(long, env = "BRAID_REQUEST_BODY_TIMEOUT", default_value = "60s", value_parser = crate::limits::parse_duration)]
    pub request_body_timeout: Duration,
    /// An upstream that sends no response head (HTTP/1.1: no body bytes either) for this
    /// long fails the attempt with 504.
    #[arg(long, env = "BRAID_RESPONSE_TIMEOUT", default_value = "5m", value_parser = crate::limits::parse_duration)]
    pub response_timeout: Duration,
    /// Pooled upstream connections idle longer than this are closed, not reused; keep it
    /// under the app servers' own keep-alive timeout.
    #[arg(long, env = "BRAID_UPSTREAM_IDLE_TIMEOUT", default_value = "4s", value_parser = crate::limits::parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// An opaque TCP connection with no bytes either way for this long is closed.
    #[arg(long, env = "BRAID_TCP_IDLE_TIMEOUT", default_value = "1h", value_parser = crate::limits::parse_duration)]
    pub tcp_idle_timeout: Duration,
    /// The largest request head accepted, in bytes; larger ones are answered 431.
    #[arg(long, env = "BRAID_MAX_HEADER_BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1024..=1_048_576))]
    pub max_header_bytes: u32,
    /// Connections each listener holds at once; more wait in the kernel's backlog until
    /// one closes.
    #[arg(long, env = "BRAID_MAX_CONNECTIONS", default_value_t = 20000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How often the config file is checked for changes, in milliseconds.
    #[arg(long, env = "BRAID_CONFIG_POLL_MS", default_value_t = 500)]
    pub config_poll_ms: u64,
    /// Log filter: a level (trace, debug, info, warn, error, off) or comma-separated
    /// `target=level` directives with at most one plain level, e.g. `info` or
    /// `warn,braid_proxy=debug`; anything else is refused. Change it live with
    /// POST /logging?level=.
    #[arg(long, env = "BRAID_LOG_LEVEL", default_value = "info", value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: String,
    /// Log as JSON lines.
    #[arg(long, env = "BRAID_LOG_JSON")]
    pub log_json: bool,
    /// The workload this proxy serves (its Deployment's, StatefulSet's, … name; the
    /// injector sets it): every metric carries it as the `workload` label, and spans
    /// name it as their `service.name`.
    #[arg(long, env = "BRAID_WORKLOAD", value_name = "NAME")]
    pub workload: Option<String>,
    /// The access log: `json` writes a JSON line per request (both directions) to
    /// standard output, off the request path (lines it cannot keep up with are dropped
    /// and counted in `braid_access_log_lines_total`); `off` writes none.
    #[arg(
        long,
        env = "BRAID_ACCESS_LOG",
        default_value = "off",
        value_name = "FORMAT"
    )]
    pub access_log: braid_api::telemetry::AccessLogFormat,
    /// An OpenTelemetry collector's OTLP/HTTP address, `http://host:port` (e.g.
    /// `http://otel-collector.observability:4318`): each request hop's span is sent to
    /// `/v1/traces` there in batches, and W3C (and B3) trace context is carried on.
    /// Without it, or with `off`, there is no tracing.
    #[arg(long, env = "BRAID_TRACE_COLLECTOR", value_name = "URL")]
    pub trace_collector: Option<braid_api::telemetry::CollectorSetting>,
    /// The share of new traces sampled, in percent (0 to 100; decimals allowed). A
    /// request whose caller decided already (the sampled flag of `traceparent` or B3)
    /// follows the caller.
    #[arg(
        long,
        env = "BRAID_TRACE_SAMPLING",
        default_value = "1",
        value_name = "PERCENT"
    )]
    pub trace_sampling: braid_api::telemetry::SamplingPercent,
    /// The app's probes, as JSON `{"<container>/<kind>": {"http": {"port": 8080, "path":
    /// "/healthz", "headers": [["Host", "x"]]}}}` (also `"https"` of the same shape,
    /// `"tcp": {"port"}`, `"grpc": {"port", "service"}`; a bare `{"port", "path"}` is
    /// `http`); the health port performs each at `/app-health/<container>/<kind>` (the
    /// injector writes this).
    #[arg(long, env = "BRAID_APP_PROBES", default_value = "")]
    pub app_probes: String,
}

pub use braid_api::log::{LOG_LEVELS, parse_log_filter};

impl RunArgs {
    /// The access log and tracing the flags turn on.
    pub fn telemetry(&self) -> crate::telemetry::TelemetryConfig {
        crate::telemetry::TelemetryConfig {
            access_log: self.access_log,
            collector: self.trace_collector.clone().and_then(|c| c.into_url()),
            sampling: self.trace_sampling,
            source: crate::telemetry::otlp::Source {
                service: self
                    .workload
                    .clone()
                    .or_else(|| self.service_account.clone())
                    .unwrap_or_else(|| "braid-proxy".into()),
                namespace: self.pod_namespace.clone(),
                pod: self.pod_name.clone(),
            },
        }
    }

    /// The connection limits the flags set.
    pub fn limits(&self) -> crate::limits::Limits {
        crate::limits::Limits {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
            request_body: self.request_body_timeout,
            response: self.response_timeout,
            upstream_idle: self.upstream_idle_timeout,
            tcp_idle: self.tcp_idle_timeout,
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// Flags of `braid-proxy wait-ready`.
#[derive(Debug, Args)]
pub struct WaitReadyArgs {
    /// The proxy's admin address.
    #[arg(long, env = "BRAID_ADMIN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::ADMIN_PORT)))]
    pub admin_addr: SocketAddr,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Flags of `braid-proxy wait-app-exit`.
#[derive(Debug, Args)]
pub struct WaitAppExitArgs {
    /// The proxy's admin address.
    #[arg(long, env = "BRAID_ADMIN_ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::ADMIN_PORT)))]
    pub admin_addr: SocketAddr,
    /// The ports the app's containers declare, comma-separated; while any accepts
    /// connections the app is running. Without them only outbound connections tell.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    pub app_ports: Vec<u16>,
    /// The pod's IP (downward API), also checked for the app's ports: some apps listen
    /// only on it.
    #[arg(long, env = "BRAID_POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    /// How long the app must look gone before the hook returns, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub quiet_ms: u64,
    /// How often to look, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
}

/// Which of the mesh's services a proxy streaming from the operator holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Services {
    /// Those its app calls, found on first use.
    #[default]
    OnDemand,
    /// Every one.
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        let mut argv = vec!["braid-proxy", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Run(args),
            }) => Ok(args),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    const OPERATOR: [&str; 8] = [
        "--operator",
        "https://braid-operator.braid-system.svc:8443",
        "--operator-ca",
        "/etc/braid/ca.pem",
        "--pod-name",
        "web-0",
        "--pod-namespace",
        "shop",
    ];

    #[test]
    fn operator_flags() {
        let args = parse(&OPERATOR).unwrap();
        let url = args.operator.unwrap();
        assert_eq!(url.host(), "braid-operator.braid-system.svc");
        assert_eq!(url.port(), 8443);
        assert_eq!(
            args.token_file,
            PathBuf::from("/var/run/secrets/braid.dev/token")
        );
        assert_eq!(args.pod_name.as_deref(), Some("web-0"));
    }

    #[test]
    fn exactly_one_config_source() {
        let err = parse(&[]).unwrap_err();
        assert!(
            err.contains("--config") && err.contains("--operator"),
            "{err}"
        );
        let mut both = OPERATOR.to_vec();
        both.extend(["--config", "/etc/braid/config.yaml"]);
        let err = parse(&both).unwrap_err();
        assert!(err.contains("cannot be used with"), "{err}");
        assert!(parse(&["--config", "/etc/braid/config.yaml"]).is_ok());
    }

    #[test]
    fn operator_needs_its_companions() {
        let err = parse(&OPERATOR[..2]).unwrap_err();
        for flag in ["--operator-ca", "--pod-name", "--pod-namespace"] {
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn log_filters_are_levels_or_target_directives() {
        for good in [
            "info",
            "OFF",
            "warn,braid_proxy=debug",
            "braid_proxy::http=trace, hyper=warn",
        ] {
            assert_eq!(parse_log_filter(good).as_deref(), Ok(good));
        }
        for bad in [
            "loud",
            "verbose",
            "",
            "info,",
            "braid_proxy=",
            "=debug",
            "braid_proxy=loud",
            "info,debug",
            "[span]=info",
            "3",
        ] {
            let err = parse_log_filter(bad).unwrap_err();
            assert!(
                err.to_string().contains("accepted: one of trace, debug"),
                "{bad}: {err}"
            );
        }
        let err = parse(&["--config", "c.yaml", "--log-level", "loud"]).unwrap_err();
        assert!(err.contains("--log-level <FILTER>"), "{err}");
        assert!(err.contains("\"loud\" is not a log level"), "{err}");
        assert_eq!(parse(&["--config", "c.yaml"]).unwrap().log_level, "info");
    }

    #[test]
    fn a_bad_operator_url_names_the_flag() {
        let mut args = OPERATOR.to_vec();
        args[1] = "http://braid-operator:8443";
        let err = parse(&args).unwrap_err();
        assert!(err.contains("--operator <URL>"), "{err}");
        assert!(err.contains("the scheme must be https"), "{err}");
    }

    #[test]
    fn telemetry_flags_default_to_off_and_name_themselves_when_wrong() {
        use braid_api::telemetry::{AccessLogFormat, SamplingPercent};
        let config = parse(&["--config", "c.yaml"]).unwrap().telemetry();
        assert_eq!(config.access_log, AccessLogFormat::Off);
        assert_eq!(config.collector, None);
        assert_eq!(config.sampling, SamplingPercent::DEFAULT);
        let config = parse(&[
            "--config",
            "c.yaml",
            "--access-log",
            "json",
            "--trace-collector",
            "http://otel.observability/",
            "--trace-sampling",
            "0.5%",
        ])
        .unwrap()
        .telemetry();
        assert_eq!(config.access_log, AccessLogFormat::Json);
        assert_eq!(
            config.collector.map(|c| c.to_string()).as_deref(),
            Some("http://otel.observability:4318")
        );
        assert_eq!(config.sampling.get(), 0.5);
        // `off` is no collector, as no flag is.
        let args = parse(&["--config", "c.yaml", "--trace-collector", "off"]).unwrap();
        assert_eq!(args.telemetry().collector, None);
        for (flag, value, says) in [
            ("--access-log", "JSON", "neither \"json\" nor \"off\""),
            (
                "--trace-collector",
                "https://otel:4318",
                "TLS to the collector",
            ),
            ("--trace-collector", "otel:4318", "\"http://otel:4318\""),
            ("--trace-sampling", "1e2", "not a plain decimal"),
        ] {
            let err = parse(&["--config", "c.yaml", flag, value]).unwrap_err();
            assert!(
                err.contains(flag) && err.contains(says),
                "{flag} {value}: {err}"
            );
        }
    }

    #[test]
    fn limit_flags_default_to_the_limits_and_name_themselves_when_wrong() {
        let args = parse(&["--config", "c.yaml"]).unwrap();
        assert_eq!(args.limits(), crate::limits::Limits::default());
        let args = parse(&[
            "--config",
            "c.yaml",
            "--header-read-timeout",
            "300ms",
            "--idle-timeout",
            "1m30s",
            "--max-connections",
            "5",
        ])
        .unwrap();
        let limits = args.limits();
        assert_eq!(limits.header_read, Duration::from_millis(300));
        assert_eq!(limits.idle, Duration::from_secs(90));
        assert_eq!(limits.max_connections, 5);
        for (flag, value, says) in [
            ("--idle-timeout", "60", "the unit is missing"),
            ("--response-timeout", "0s", "longer than zero"),
            ("--max-header-bytes", "100", "1024..=1048576"),
            ("--max-connections", "0", "0 is not in 1.."),
        ] {
            let err = parse(&["--config", "c.yaml", flag, value]).unwrap_err();
            assert!(err.contains(flag), "{flag}: {err}");
            assert!(err.contains(says), "{flag}: {err}");
        }
    }
}
