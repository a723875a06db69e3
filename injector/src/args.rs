//! The flags that say what goes into every pod, shared by the webhook (`braid-injector
//! serve`), offline injection (`braid-injector inject`) and `braidctl inject`, so all
//! three inject the same thing.

use clap::Args;

use crate::annotations::telemetry;
use crate::native_sidecars::NativeSidecars;
use crate::settings::Settings;

/// What goes into every pod.
#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The image with braid-proxy, for braid-init and the sidecar.
    #[arg(
        long,
        env = "BRAID_PROXY_IMAGE",
        // The release this injector is: the tag manifests/ deploys, not `latest`.
        default_value = concat!("ghcr.io/braid-mesh/braid:", env!("CARGO_PKG_VERSION"))
    )]
    pub proxy_image: String,
    /// The operator's config stream, as proxies reach it.
    #[arg(
        long,
        env = "BRAID_OPERATOR_URL",
        default_value = "https://braid-operator.braid-system.svc:8443"
    )]
    pub operator_url: String,
    /// The mesh's own namespace, never injected.
    #[arg(long, env = "BRAID_MESH_NAMESPACE", default_value = "braid-system")]
    pub mesh_namespace: String,
    /// Inject the proxy as a native sidecar (an init container with restartPolicy
    /// Always, Kubernetes 1.29+), or as the first container with postStart/preStop hooks
    /// (`false`, for older clusters). `auto` asks the API server its version; it is the
    /// default of `serve`, while offline `inject` defaults to `true`. Kubelets may lag
    /// the API server by minor versions: on a 1.29 control plane with 1.28 nodes, say
    /// `false`.
    #[arg(long, env = "BRAID_NATIVE_SIDECARS", value_enum)]
    pub native_sidecars: Option<NativeSidecars>,
    /// UID and GID of the proxy.
    #[arg(long, env = "BRAID_PROXY_UID", default_value_t = i64::from(braid_api::ports::PROXY_UID))]
    pub proxy_uid: i64,
    /// The proxies' default log filter (a pod may set braid.dev/log-level).
    #[arg(long, env = "BRAID_PROXY_LOG_LEVEL", default_value = "info")]
    pub proxy_log_level: String,
    /// The proxies' default access log: `json` (one JSON line per request on the
    /// proxy's standard output) or `off` (a pod may set braid.dev/access-log).
    #[arg(
        long,
        env = "BRAID_PROXY_ACCESS_LOG",
        value_name = "off|json",
        default_value = telemetry::DEFAULT_ACCESS_LOG,
        value_parser = telemetry::access_log
    )]
    pub proxy_access_log: String,
    /// The OpenTelemetry collector the proxies export traces to by default: the base
    /// URL of its OTLP/HTTP endpoint, http://host:port (e.g.
    /// http://otel-collector.observability:4318; the proxy posts to <URL>/v1/traces).
    /// Unset, empty or `off`: no export, unless a pod sets braid.dev/trace-collector (a
    /// pod's `off` turns the default off for it).
    #[arg(
        long,
        env = "BRAID_TRACE_COLLECTOR",
        value_name = "URL",
        value_parser = collector_flag
    )]
    pub trace_collector: Option<String>,
    /// The proxies' default share of new traces sampled, in percent from 0 to 100
    /// (e.g. 0.5); a request whose caller already decided follows the caller (a pod may
    /// set braid.dev/trace-sampling).
    #[arg(
        long,
        env = "BRAID_TRACE_SAMPLING",
        value_name = "PERCENT",
        default_value = telemetry::DEFAULT_TRACE_SAMPLING,
        value_parser = telemetry::trace_sampling
    )]
    pub trace_sampling: String,
}

/// `--trace-collector`: a collector's URL (in the proxy's normal form), or `off` or
/// empty for none (so a Deployment can set `BRAID_TRACE_COLLECTOR: ""`); none is empty.
fn collector_flag(value: &str) -> Result<String, telemetry::TelemetryError> {
    match value.trim() {
        "" => Ok(String::new()),
        setting => telemetry::trace_collector(setting).map(|normal| match normal.as_str() {
            telemetry::TRACE_COLLECTOR_OFF => String::new(),
            _ => normal,
        }),
    }
}

impl InjectArgs {
    /// The settings these flags give, with native sidecars on or off.
    pub fn settings(&self, native_sidecars: bool) -> Settings {
        Settings {
            image: self.proxy_image.clone(),
            operator_url: self.operator_url.clone(),
            mesh_namespace: self.mesh_namespace.clone(),
            native_sidecars,
            proxy_uid: self.proxy_uid,
            log_level: self.proxy_log_level.clone(),
            access_log: self.proxy_access_log.clone(),
            trace_collector: self.trace_collector.clone().filter(|url| !url.is_empty()),
            trace_sampling: self.trace_sampling.clone(),
            ..Default::default()
        }
    }
}
