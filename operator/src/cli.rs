//! Command-line interface of `braid-operator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

use crate::ca::secret::DEFAULT_CA_SECRET;
use crate::ca::webhook::{DEFAULT_WEBHOOK_CONFIG, DEFAULT_WEBHOOK_SECRET, DEFAULT_WEBHOOK_SERVICE};

/// braid's operator: watches Services, Pods and braid resources, compiles one config per
/// meshed workload, and streams it to the proxies over HTTPS.
#[derive(Debug, Parser)]
#[command(name = "braid-operator", version)]
pub struct Cli {
    /// Where resources come from: `kube` (the cluster the operator runs in, or the one
    /// KUBECONFIG names) or `dir:PATH` (braid resource YAML plus registry.yaml in a
    /// directory, re-read on change: for running without a cluster).
    #[arg(long, env = "BRAID_SOURCE", default_value = "kube")]
    pub source: SourceArg,
    /// Address of the config stream (HTTPS, HTTP/2) that proxies connect to.
    #[arg(long, env = "BRAID_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "BRAID_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// SPIFFE trust domain of workload identities.
    #[arg(long, env = "BRAID_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// The cluster's DNS domain, for service hostnames (`name.ns.svc.<domain>`).
    #[arg(long, env = "BRAID_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The mTLS mode of workloads no EncryptionPolicy governs (mesh-wide default):
    /// Disabled, Permissive or Strict. A namespace-wide policy (empty selector) overrides
    /// it, and a policy selecting the workload by labels overrides both.
    #[arg(
        long,
        env = "BRAID_DEFAULT_TLS_MODE",
        default_value = "Disabled",
        value_parser = parse_tls_mode
    )]
    pub default_tls_mode: braid_api::config::tls::TlsMode,
    /// PEM certificate chain of the config server, to use instead of one the operator
    /// makes (e.g. from cert-manager; every replica must then present it). Without it,
    /// with --source kube each replica has its own certificate for --tls-san signed by
    /// braid's CA (--ca-secret) and renewed in place; in directory mode a self-signed one.
    /// With it, the braid-operator-ca ConfigMaps are left to you: they must hold the CA
    /// that signed it.
    #[arg(long, env = "BRAID_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "BRAID_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Names (DNS or IP) of the certificate the operator makes, comma-separated, used as
    /// given. Default: braid-operator.<namespace>.svc,
    /// braid-operator.<namespace>.svc.<cluster-domain>, braid-operator, localhost,
    /// 127.0.0.1, from --namespace and --cluster-domain.
    #[arg(long, env = "BRAID_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Write the PEM certificate(s) proxies must trust (their --operator-ca) to this file.
    #[arg(long, env = "BRAID_TLS_TRUST_OUT")]
    pub tls_trust_out: Option<PathBuf>,
    /// Kubernetes mode: the Secret (in --namespace) holding braid's CA — tls.crt (the
    /// signing certificate, then any intermediates), tls.key, ca.crt (the root(s)).
    /// Created with a new root when absent; one you create is used as it is.
    #[arg(long, env = "BRAID_CA_SECRET", default_value = DEFAULT_CA_SECRET)]
    pub ca_secret: String,
    /// Kubernetes mode: the kubernetes.io/tls Secret (in --namespace) the operator's
    /// leader writes the injector's serving certificate to, renewing it in time.
    #[arg(
        long,
        env = "BRAID_WEBHOOK_SECRET",
        default_value = DEFAULT_WEBHOOK_SECRET
    )]
    pub webhook_secret: String,
    /// Kubernetes mode: the injector's Service (in --namespace); its certificate is for
    /// <service>.<namespace>.svc and <service>.<namespace>.svc.<cluster-domain>.
    #[arg(long, env = "BRAID_WEBHOOK_SERVICE", default_value = DEFAULT_WEBHOOK_SERVICE)]
    pub webhook_service: String,
    /// Kubernetes mode: the MutatingWebhookConfiguration whose webhooks' caBundle the
    /// leader keeps equal to the CA's trust bundle.
    #[arg(long, env = "BRAID_WEBHOOK_CONFIG", default_value = DEFAULT_WEBHOOK_CONFIG)]
    pub webhook_config: String,
    /// Directory mode: a YAML list of bootstrap tokens, each naming the namespace and
    /// service account (and optionally the pod) it stands for. Required with dir:PATH.
    #[arg(long, env = "BRAID_BOOTSTRAP_TOKENS")]
    pub bootstrap_tokens: Option<PathBuf>,
    /// Directory mode: where resource statuses are written (default: PATH/.status).
    #[arg(long, env = "BRAID_STATUS_DIR")]
    pub status_dir: Option<PathBuf>,
    /// How long proxies' certificates are valid, in seconds (at least 60); proxies
    /// renew at half-life.
    #[arg(long, env = "BRAID_PROXY_CERT_LIFETIME_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub proxy_cert_lifetime_secs: u64,
    /// Directory mode: the program that carries out SelfHealing actions (RestartPod,
    /// RemoveFromService, and Readmit when a quarantine is lifted), e.g. a script calling
    /// the service manager. It gets BRAID_ACTION, BRAID_POD_NAME, BRAID_POD_NAMESPACE,
    /// BRAID_POD_IP, BRAID_ENDPOINT, BRAID_TARGET and BRAID_SELF_HEALING in its
    /// environment and must exit 0 when done. Without it, those actions fail with an
    /// Event saying so. (With --source kube the operator evicts and labels pods itself.)
    #[arg(long, env = "BRAID_HEALING_COMMAND")]
    pub healing_command: Option<PathBuf>,
    /// Directory mode: how often the directory is checked for changes, in milliseconds.
    #[arg(long, env = "BRAID_POLL_MS", default_value_t = 100)]
    pub poll_ms: u64,
    /// Kubernetes mode: changes arriving within this many milliseconds are compiled
    /// together (directory mode compiles what each --poll-ms check finds).
    #[arg(long, env = "BRAID_DEBOUNCE_MS", default_value_t = 50)]
    pub debounce_ms: u64,
    /// How long a proxy's stream request waits for its pod to appear (a pod can connect
    /// before the operator's watch has seen it), in milliseconds.
    #[arg(long, env = "BRAID_POD_WAIT_MS", default_value_t = 10_000)]
    pub pod_wait_ms: u64,
    /// An idle config stream carries an empty line this often (seconds).
    #[arg(long, env = "BRAID_HEARTBEAT_SECS", default_value_t = 15)]
    pub heartbeat_secs: u64,
    /// The operator's namespace (the leader-election Lease, the CA Secret and the
    /// webhook's Secret live there). Set from the downward API in the manifests.
    #[arg(long, env = "BRAID_NAMESPACE", default_value = "braid-system")]
    pub namespace: String,
    /// This replica's name, its identity in leader election (the pod name; default: the
    /// HOSTNAME, which Kubernetes sets to the pod name). Replicas must not share it; in
    /// directory mode give each replica on one host its own.
    #[arg(long, env = "BRAID_POD_NAME")]
    pub pod_name: Option<String>,
    /// Directory mode: the address other replicas reach this one's config server at, to
    /// relay proxies' reports to the leader (default: --listen, when it names an IP).
    #[arg(long, env = "BRAID_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<SocketAddr>,
    /// On SIGTERM, end streams and wait at most this many seconds for connections to close.
    #[arg(long, env = "BRAID_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Log filter, e.g. info or braid_operator=debug.
    #[arg(long, env = "BRAID_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines.
    #[arg(long, env = "BRAID_LOG_JSON")]
    pub log_json: bool,
}

/// The operator Service's name, which its certificate's default names are built on.
pub const OPERATOR_SERVICE: &str = "braid-operator";

impl Cli {
    /// The names of the certificate the operator makes: `--tls-san` as given, or by
    /// default the operator Service's names in `--namespace` and `--cluster-domain`,
    /// then `braid-operator`, `localhost` and `127.0.0.1`.
    pub fn tls_names(&self) -> Vec<String> {
        if !self.tls_san.is_empty() {
            return self.tls_san.clone();
        }
        let short = format!("{OPERATOR_SERVICE}.{}.svc", self.namespace);
        let full = format!("{short}.{}", self.cluster_domain);
        vec![
            short,
            full,
            OPERATOR_SERVICE.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ]
    }
}

/// `--source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceArg {
    /// The Kubernetes API.
    Kube,
    /// A directory.
    Dir(PathBuf),
}

impl FromStr for SourceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kube" => Ok(Self::Kube),
            _ => match s.strip_prefix("dir:") {
                Some(path) if !path.is_empty() => Ok(Self::Dir(PathBuf::from(path))),
                _ => Err(format!("{s:?}: use `kube` or `dir:PATH`")),
            },
        }
    }
}

/// `Disabled`, `Permissive` or `Strict`, in any case.
fn parse_tls_mode(text: &str) -> Result<braid_api::config::tls::TlsMode, String> {
    use braid_api::config::tls::TlsMode;
    match text.to_ascii_lowercase().as_str() {
        "disabled" => Ok(TlsMode::Disabled),
        "permissive" => Ok(TlsMode::Permissive),
        "strict" => Ok(TlsMode::Strict),
        _ => Err(format!(
            "{text:?} is not a TLS mode: use Disabled, Permissive or Strict"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_mode_needs_no_certificate_flags() {
        let cli = Cli::try_parse_from(["braid-operator"]).unwrap();
        assert_eq!(cli.source, SourceArg::Kube);
        assert!(cli.tls_cert.is_none() && cli.tls_key.is_none());
        assert_eq!(cli.ca_secret, "braid-ca");
        assert_eq!(cli.webhook_secret, "braid-injector-tls");
        assert_eq!(cli.webhook_service, "braid-injector");
        assert_eq!(cli.webhook_config, "braid-injector");
        assert_eq!(
            cli.tls_names(),
            [
                "braid-operator.braid-system.svc",
                "braid-operator.braid-system.svc.cluster.local",
                "braid-operator",
                "localhost",
                "127.0.0.1",
            ]
        );
    }

    #[test]
    fn the_default_names_follow_namespace_and_cluster_domain() {
        let cli = Cli::try_parse_from([
            "braid-operator",
            "--namespace",
            "mesh",
            "--cluster-domain",
            "corp.example",
        ])
        .unwrap();
        assert_eq!(
            cli.tls_names(),
            [
                "braid-operator.mesh.svc",
                "braid-operator.mesh.svc.corp.example",
                "braid-operator",
                "localhost",
                "127.0.0.1",
            ]
        );
        // Given names are used exactly as they are, whatever the namespace.
        let cli = Cli::try_parse_from([
            "braid-operator",
            "--namespace",
            "mesh",
            "--tls-san",
            "operator.example.com,10.0.0.1",
        ])
        .unwrap();
        assert_eq!(cli.tls_names(), ["operator.example.com", "10.0.0.1"]);
    }

    #[test]
    fn sources_parse() {
        assert_eq!("kube".parse::<SourceArg>().unwrap(), SourceArg::Kube);
        assert_eq!(
            "dir:/demo".parse::<SourceArg>().unwrap(),
            SourceArg::Dir("/demo".into())
        );
        assert!(
            "dir:"
                .parse::<SourceArg>()
                .unwrap_err()
                .contains("dir:PATH")
        );
        assert!("cluster".parse::<SourceArg>().is_err());
    }
}
