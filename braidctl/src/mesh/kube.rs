//! Kubernetes mode: the cluster of the kubeconfig (`KUBECONFIG`, `~/.kube/config`, or
//! in-cluster), its context chosen with `--context`. Resources are the braid custom
//! resources with the statuses the operator's leader wrote; the operator replicas are the
//! running pods of its Deployment, asked through the API server's pod proxy.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{Admin, KINDS, MetricsSource, Resource};

/// The API group of braid's resources.
pub const GROUP: &str = "braid.dev";
/// Their version.
pub const VERSION: &str = "v1alpha1";
/// The label of the namespaces the injector meshes.
pub const INJECT_LABEL: &str = "braid.dev/inject";
/// The selector of those namespaces.
pub const MESHED_NAMESPACES: &str = "braid.dev/inject=enabled";
/// The label that names the operator's pods.
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=braid-operator";
/// The operator's admin port, when its pod does not name one `http-admin`.
pub const OPERATOR_ADMIN_PORT: u16 = 9090;

/// A mesh in a cluster.
pub struct KubeMesh {
    client: kube::Client,
    mesh_namespace: String,
}

/// What `kind` lists as, for kube's dynamic API.
pub fn api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// Whether `e` is the API server saying 404.
pub fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl KubeMesh {
    /// The cluster of `kubeconfig` (default: `KUBECONFIG`, then `~/.kube/config`, then
    /// in-cluster) and `context` (default: its current context).
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        mesh_namespace: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..KubeConfigOptions::default()
        };
        let hint = "pass --kubeconfig PATH (or set KUBECONFIG), or --dir PATH for a mesh run from a directory";
        let mut config = match (kubeconfig, context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path)
                    .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .with_context(|| format!("--kubeconfig {}", path.display()))?
            }
            (None, Some(name)) => kube::Config::from_kubeconfig(&options)
                .await
                .with_context(|| format!("--context {name}: cannot use it ({hint})"))?,
            (None, None) => kube::Config::infer()
                .await
                .with_context(|| format!("no cluster found: {hint}"))?,
        };
        // kube retries 429, 503 and 504 up to 15 times with a growing backoff, fit for a
        // controller; a person waiting on a command wants the answer the server gave.
        config.default_retry = false;
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        let client =
            kube::Client::try_from(config).context("cannot build a client for the cluster")?;
        Ok(Self {
            client,
            mesh_namespace: mesh_namespace.to_owned(),
        })
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The namespace braid runs in.
    pub fn mesh_namespace(&self) -> &str {
        &self.mesh_namespace
    }

    /// Every braid resource in `namespace` (all when `None`), with its status.
    pub async fn resources(&self, namespace: Option<&str>) -> anyhow::Result<Vec<Resource>> {
        let mut found = Vec::new();
        for (kind, plural) in KINDS {
            let ar = api_resource(kind, plural);
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
                None => Api::all_with(self.client.clone(), &ar),
            };
            let list = match api.list(&ListParams::default()).await {
                Ok(list) => list,
                Err(e) if not_found(&e) => anyhow::bail!(
                    "the CRD {plural}.{GROUP} is not installed in this cluster: install braid \
                     (braidctl install --render | kubectl apply -f -) and run braidctl check"
                ),
                Err(e) => return Err(e).with_context(|| format!("listing {plural}.{GROUP}")),
            };
            for obj in list.items {
                found.push(Resource {
                    kind: kind.to_owned(),
                    namespace: obj.metadata.namespace.clone().unwrap_or_default(),
                    name: obj.metadata.name.clone().unwrap_or_default(),
                    status: obj.data.get("status").cloned(),
                });
            }
        }
        found.sort_by(|a, b| {
            (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name))
        });
        Ok(found)
    }

    /// The operator's running pods, as admin ports through the pod proxy.
    pub async fn operators(&self) -> anyhow::Result<Vec<Admin>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.mesh_namespace);
        let list = pods
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await
            .with_context(|| {
                format!(
                    "listing the operator's pods in {} ({OPERATOR_SELECTOR}); --braid-namespace names braid's namespace",
                    self.mesh_namespace
                )
            })?;
        let admins: Vec<Admin> = list
            .items
            .iter()
            .filter(|p| running(p))
            .map(|p| Admin::PodProxy {
                client: self.client.clone(),
                namespace: self.mesh_namespace.clone(),
                pod: p.metadata.name.clone().unwrap_or_default(),
                port: admin_port(p),
            })
            .collect();
        if admins.is_empty() {
            anyhow::bail!(
                "no running operator pod in {} ({OPERATOR_SELECTOR}): is braid installed? braidctl check tells",
                self.mesh_namespace
            );
        }
        Ok(admins)
    }

    /// Every running pod with the proxy in a namespace labelled for injection (only
    /// `namespace`'s when given, so a user with rights in one namespace can ask), at its
    /// health port through the pod proxy.
    pub async fn metrics_sources(
        &self,
        namespace: Option<&str>,
    ) -> anyhow::Result<Vec<MetricsSource>> {
        let namespaces: Vec<String> = match namespace {
            Some(ns) => vec![ns.to_owned()],
            None => {
                let all: Api<Namespace> = Api::all(self.client.clone());
                all.list(&ListParams::default().labels(MESHED_NAMESPACES))
                    .await
                    .context(format!("listing the namespaces labelled {MESHED_NAMESPACES} (-n NAMESPACE asks one only)"))?
                    .items
                    .into_iter()
                    .filter_map(|n| n.metadata.name)
                    .collect()
            }
        };
        let mut sources = Vec::new();
        for ns in namespaces.iter().map(String::as_str) {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let list = pods
                .list(&ListParams::default())
                .await
                .with_context(|| format!("listing the pods of {ns}"))?;
            for pod in list.items.iter().filter(|p| running(p) && has_proxy(p)) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                sources.push(MetricsSource {
                    pod: format!("{ns}/{name}"),
                    owner: owner(pod),
                    admin: Admin::PodProxy {
                        client: self.client.clone(),
                        namespace: ns.to_owned(),
                        pod: name,
                        port: braid_api::ports::HEALTH_PORT,
                    },
                });
            }
        }
        Ok(sources)
    }

    /// The admin port of the running, meshed pod at `ip`, forwarded.
    pub async fn proxy_admin_at(&self, ip: std::net::IpAddr) -> anyhow::Result<Option<Admin>> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let found = pods
            .list(&ListParams::default().fields(&format!("status.podIP={ip}")))
            .await
            .with_context(|| format!("finding the pod at {ip}"))?;
        Ok(found
            .items
            .iter()
            .find(|p| running(p) && has_proxy(p))
            .map(|p| Admin::PortForward {
                client: self.client.clone(),
                namespace: p.metadata.namespace.clone().unwrap_or_default(),
                pod: p.metadata.name.clone().unwrap_or_default(),
                port: braid_api::ports::ADMIN_PORT,
            }))
    }
}

/// The proxy's container.
pub const PROXY_CONTAINER: &str = "braid-proxy";

/// The proxy's container of `pod`: a native sidecar, or a container.
pub fn proxy_container(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)
}

/// Whether `pod` runs braid's proxy.
fn has_proxy(pod: &Pod) -> bool {
    proxy_container(pod).is_some()
}

/// The Deployment a pod belongs to, from its ReplicaSet's `pod-template-hash`
/// (`web-5d8f7c-x2x9z` of hash `5d8f7c` is `web`); else its `app` label; else its name.
pub fn owner(pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.metadata.labels.as_ref();
    if let Some(hash) = labels.and_then(|l| l.get("pod-template-hash"))
        && let Some((deployment, _)) = name.split_once(&format!("-{hash}-"))
    {
        return deployment.to_owned();
    }
    labels.and_then(|l| l.get("app")).cloned().unwrap_or(name)
}

/// Whether `pod` runs and has an address.
pub fn running(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
    })
}

/// The port the operator's pod names `http-admin`, else the default.
fn admin_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("http-admin"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(OPERATOR_ADMIN_PORT)
}
