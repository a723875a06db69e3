//! braidctl's command line: kubectl's conventions (`-n`, `-A`, `-o`, `--context`) plus
//! where the mesh is when it runs without Kubernetes (`--dir`, `--operator`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Check, see and explain a braid mesh.
#[derive(Debug, Parser)]
#[command(name = "braidctl", version)]
pub struct Cli {
    /// Where the mesh is and how to print.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Directory mode: the operator's directory (its `--source dir:PATH`), whose
    /// `.status/` holds every resource's status. Without it, braidctl works on the
    /// cluster of the kubeconfig.
    #[arg(long, global = true, env = "BRAIDCTL_DIR")]
    pub dir: Option<PathBuf>,
    /// Directory mode: the operator's status directory, when not `<dir>/.status`.
    #[arg(long, global = true, env = "BRAIDCTL_STATUS_DIR")]
    pub status_dir: Option<PathBuf>,
    /// Directory mode: the admin address (`--admin-addr`) of each operator replica,
    /// comma-separated or repeated.
    #[arg(
        long = "operator",
        global = true,
        value_delimiter = ',',
        env = "BRAIDCTL_OPERATOR"
    )]
    pub operators: Vec<SocketAddr>,
    /// The admin address of the pod's proxy. Directory mode: braidctl runs where the
    /// proxy runs (its admin port listens on loopback only), default 127.0.0.1:15000.
    /// Kubernetes mode: a port already forwarded to it (default: braidctl forwards one
    /// through the API server).
    #[arg(long, global = true)]
    pub proxy_admin: Option<SocketAddr>,
    /// Kubernetes mode: the kubeconfig file (default: KUBECONFIG, then ~/.kube/config,
    /// then the in-cluster service account).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes mode: the namespace braid is installed in.
    #[arg(long, global = true, default_value = "braid-system")]
    pub braid_namespace: String,
    /// The namespace (default: every namespace for `status`, the proxy's own for names
    /// in `explain`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Kubernetes mode: the kubeconfig context (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// How long to wait for each answer, e.g. 5s.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

/// Output formats, as kubectl names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table.
    #[value(name = "table")]
    Table,
    /// A table with more columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Whether the cluster can run braid (`--pre`), or whether braid's install works:
    /// each finding ✔, ⚠ or ✘ with the fix; exit code 1 on any ✘.
    Check(CheckArgs),
    /// Every braid resource: accepted or not, what it does now, and how many of the
    /// proxies it concerns hold it (the slow ones named).
    Status,
    /// Every proxy: the config it holds against the latest, when it applied it, where it
    /// streams from, its certificate's expiry and its version.
    ProxyStatus,
    /// One proxy's own view of its config.
    ProxyConfig(ProxyConfigArgs),
    /// How a proxy handles a request, worked out by the proxy itself.
    Explain(ExplainArgs),
    /// braidctl's version, the operator replicas' and the proxies', and any skew.
    Version,
    /// Golden signals (success rate, requests per second, p50/p95/p99 latency) per
    /// workload, service or TrafficRoute rule, from the proxies' own metrics.
    Stat(StatArgs),
    /// Add braid-init and the proxy to the pod templates of YAML files, as the webhook
    /// would (the same code), for clusters or namespaces without the webhook.
    Inject(InjectCmd),
    /// Remove exactly what `inject` or the webhook added, as each pod template's
    /// `braid.dev/status` records it.
    Uninject(UninjectCmd),
    /// This release's install manifests (`--render`), with the image and replica counts
    /// given: `braidctl install --render | kubectl apply --server-side -f -`.
    Install(InstallArgs),
}

/// `braidctl check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Before install: the cluster's version, native sidecars, your permissions, and the
    /// Pod Security level of the namespaces to mesh (`-n` names one not labelled yet).
    #[arg(long)]
    pub pre: bool,
}

/// `braidctl stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// What to sum by.
    #[arg(value_enum, default_value_t = StatBy::Deploy)]
    pub by: StatBy,
    /// How long to watch: the proxies are scraped at its start and its end. `0s`: since
    /// each proxy started (no requests per second).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window: std::time::Duration,
}

/// What `stat` sums by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatBy {
    /// Each pod: what its app serves (inbound).
    #[value(alias = "pods", alias = "po")]
    Pod,
    /// Each workload (Deployment, or the pods' `app` label in directory mode): what it
    /// serves (inbound).
    #[value(alias = "deployment", alias = "deployments")]
    Deploy,
    /// Each service: what its callers saw (outbound).
    #[value(alias = "service", alias = "services")]
    Svc,
    /// Each service's TrafficRoute rule and group: what its callers saw (outbound).
    #[value(alias = "routes")]
    Route,
}

/// `braidctl inject`.
#[derive(Debug, Args)]
pub struct InjectCmd {
    /// The YAML file (several documents allowed; Pods, Deployments, StatefulSets,
    /// DaemonSets, ReplicaSets, Jobs, CronJobs, Lists of them); `-` for standard input.
    #[arg(short = 'f', long, default_value = "-")]
    pub filename: PathBuf,
    /// What goes into every pod: the webhook's own flags.
    #[command(flatten)]
    pub inject: braid_injector::args::InjectArgs,
}

/// `braidctl uninject`.
#[derive(Debug, Args)]
pub struct UninjectCmd {
    /// The YAML file; `-` for standard input.
    #[arg(short = 'f', long, default_value = "-")]
    pub filename: PathBuf,
}

/// `braidctl install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Print the manifests (YAML; `-o json` for a List) instead of applying them.
    #[arg(long)]
    pub render: bool,
    /// The image of every component and of the proxy injected into pods (default: this
    /// release's, ghcr.io/braid-mesh/braid:VERSION), e.g. a mirror's.
    #[arg(long)]
    pub image: Option<String>,
    /// Operator replicas: one leads, the others serve proxies and take over (with 1, no
    /// PodDisruptionBudget, which would hold node drains).
    #[arg(long, default_value_t = 2)]
    pub operator_replicas: u32,
    /// Injector replicas: its webhook fails closed, so keep a spare (with 1, no
    /// PodDisruptionBudget).
    #[arg(long, default_value_t = 2)]
    pub injector_replicas: u32,
}

/// `braidctl proxy-config`.
#[derive(Debug, Args)]
pub struct ProxyConfigArgs {
    /// The pod, `name` or `namespace/name`.
    pub pod: String,
    /// What to show.
    #[arg(value_enum, default_value_t = Section::Summary)]
    pub section: Section,
}

/// A part of a proxy's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// A count of everything, the config's version and the pod's identity.
    Summary,
    /// TrafficRoute rules per service.
    Routes,
    /// Services, their ports and addresses.
    Services,
    /// Every endpoint, by service and group.
    Endpoints,
    /// mTLS: what the pod accepts, and how it calls each endpoint.
    Tls,
    /// Explicit listeners.
    Listeners,
}

/// `braidctl explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// What to explain.
    #[command(subcommand)]
    pub what: Explain,
}

/// What `explain` explains.
#[derive(Debug, Subcommand)]
pub enum Explain {
    /// A request POD's app sends to a service: the rule that matches and why the others
    /// do not, where it goes, mTLS, retries and deadlines; and whether the server's
    /// AccessPolicies let it in, when the server's proxy is reachable.
    Request(RequestArgs),
    /// Whether POD's proxy lets a request in to its app on a port: its mTLS mode and
    /// each AccessPolicy covering the port, for a caller of the identity (or plaintext
    /// from the address) given.
    Inbound(InboundArgs),
}

/// The request `explain` asks about.
#[derive(Debug, Args)]
pub struct RequestFlags {
    /// The method.
    #[arg(long, short = 'X', default_value = "GET")]
    pub method: String,
    /// The path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// A header, `name=value` (or `name:value`); repeat for more.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
}

/// `braidctl explain inbound`.
#[derive(Debug, Args)]
pub struct InboundArgs {
    /// The pod whose proxy decides, `name` or `namespace/name`.
    pub pod: String,
    /// The app's port the request arrives on.
    #[arg(long)]
    pub port: u16,
    /// The caller's mTLS identity (`spiffe://…`); without it, a plaintext caller.
    #[arg(long)]
    pub identity: Option<String>,
    /// The caller's address.
    #[arg(long)]
    pub address: Option<std::net::IpAddr>,
    /// The request.
    #[command(flatten)]
    pub request: RequestFlags,
}

/// `braidctl explain request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The calling pod, `name` or `namespace/name`.
    pub pod: String,
    /// The service, `name[.namespace][:port]`.
    #[arg(long)]
    pub to: String,
    /// The request.
    #[command(flatten)]
    pub request: RequestFlags,
    /// The admin address of the server's proxy, to ask it whether its AccessPolicies let
    /// the request in (Kubernetes mode: default, the proxy of the pod at the endpoint's
    /// address, forwarded).
    #[arg(long)]
    pub server_admin: Option<SocketAddr>,
    /// The caller's address, for the server's AccessPolicy rules that name pods (by
    /// `workloadLabels`), which judge the address too.
    #[arg(long)]
    pub address: Option<std::net::IpAddr>,
}
