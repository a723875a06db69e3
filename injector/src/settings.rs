//! What the injector writes into every pod, set by its flags.

use crate::annotations::telemetry::{DEFAULT_ACCESS_LOG, DEFAULT_TRACE_SAMPLING};

/// Cluster-wide injection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image holding `braid-proxy` (for both `braid-init` and the sidecar).
    pub image: String,
    /// Where proxies stream their config from.
    pub operator_url: String,
    /// The mesh's own namespace (never injected).
    pub mesh_namespace: String,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29+): an init container with
    /// `restartPolicy: Always`. Otherwise it is the first container with a `postStart`
    /// hook that waits for it to be ready.
    pub native_sidecars: bool,
    /// UID and GID the proxy runs as; the capture rules let its traffic through.
    pub proxy_uid: i64,
    /// Default CPU request of the proxy.
    pub cpu_request: String,
    /// Default CPU limit of the proxy.
    pub cpu_limit: String,
    /// Default memory request of the proxy.
    pub memory_request: String,
    /// Default memory limit of the proxy.
    pub memory_limit: String,
    /// Default log filter of the proxy.
    pub log_level: String,
    /// Default CPU request of `braid-init`.
    pub init_cpu_request: String,
    /// Default CPU limit of `braid-init`.
    pub init_cpu_limit: String,
    /// Default memory request of `braid-init`.
    pub init_memory_request: String,
    /// Default memory limit of `braid-init`.
    pub init_memory_limit: String,
    /// Default access log of the proxy: `"off"` or `"json"` (a pod may set
    /// `braid.dev/access-log`).
    pub access_log: String,
    /// Default OpenTelemetry collector (OTLP/HTTP base URL, `http://host[:port]`) the
    /// proxy exports traces to; `None` (or `"off"`): no export unless a pod sets
    /// `braid.dev/trace-collector`. A pod's `"off"` turns it off for that pod.
    pub trace_collector: Option<String>,
    /// Default percentage of new traces the proxy samples, 0-100 (a pod may set
    /// `braid.dev/trace-sampling`).
    pub trace_sampling: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/braid-mesh/braid:latest".into(),
            operator_url: "https://braid-operator.braid-system.svc:8443".into(),
            mesh_namespace: "braid-system".into(),
            native_sidecars: true,
            proxy_uid: i64::from(braid_api::ports::PROXY_UID),
            cpu_request: "50m".into(),
            cpu_limit: "1".into(),
            memory_request: "32Mi".into(),
            memory_limit: "128Mi".into(),
            log_level: "info".into(),
            // braid-init runs `braid-proxy iptables`, which runs iptables(-restore) a few
            // times and exits: a few MB and milliseconds of CPU. Requests this small never raise
            // the pod's effective request (the largest init container's, against the sum
            // of the rest); the limits leave room for the binary and its child, since an
            // OOM-killed braid-init keeps the pod from ever starting.
            init_cpu_request: "10m".into(),
            init_cpu_limit: "100m".into(),
            init_memory_request: "16Mi".into(),
            init_memory_limit: "64Mi".into(),
            access_log: DEFAULT_ACCESS_LOG.into(),
            trace_collector: None,
            trace_sampling: DEFAULT_TRACE_SAMPLING.into(),
        }
    }
}
