//! Reads what `check` judges from the cluster: every read is made, whatever failed
//! before it, so one run names every problem.

use std::collections::BTreeSet;

use braid_api::debug::{PROXIES_PATH, ProxiesAnswer};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};

use super::install::{CA_SECRET, INJECTOR, OPERATOR, WEBHOOK_SECRET, release_crds};
use super::kubernetes::meshed;
use super::snapshot::{FORBIDDEN, Permission, Read, Snapshot, not_read};

/// Why a read was not made.
const BEFORE: &str = "not asked before install";
use crate::mesh::kube::KubeMesh;

/// What went wrong with a request, in the API server's words.
pub fn why(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!("{FORBIDDEN}{}", s.message),
        kube::Error::Api(s) if !s.message.is_empty() => format!("{} ({})", s.message, s.code),
        kube::Error::Api(s) => format!("{} ({})", s.reason, s.code),
        other => other.to_string(),
    }
}

/// `get`, with "absent" as `None`.
async fn get<K>(api: Api<K>, name: &str) -> Read<Option<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|e| why(&e))
}

/// The API group of an `apiVersion` (`""` for the core group).
fn group_of(api_version: &str) -> String {
    api_version
        .rsplit_once('/')
        .map_or_else(String::new, |(g, _)| g.to_owned())
}

/// The plural resource name of a kind of the install.
fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

/// Every kind of object the install creates, where.
pub fn install_needs() -> Vec<(String, String, Option<String>)> {
    let mut needs = BTreeSet::new();
    for (_, doc) in crate::manifests::documents() {
        let (Some(api_version), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str())
        else {
            continue;
        };
        let namespace = doc["metadata"]["namespace"].as_str().map(str::to_owned);
        needs.insert((group_of(api_version), plural_of(kind), namespace));
    }
    needs.into_iter().collect()
}

/// Whether the user may `create` what the install holds.
async fn permissions(client: &kube::Client) -> Vec<Permission> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut found = Vec::new();
    for (group, resource, namespace) in install_needs() {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("create".into()),
                    group: Some(group.clone()),
                    resource: Some(resource.clone()),
                    namespace: namespace.clone(),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let allowed = api
            .create(&PostParams::default(), &review)
            .await
            .map(|r| r.status.is_some_and(|s| s.allowed))
            .map_err(|e| why(&e));
        found.push(Permission {
            verb: "create".into(),
            group,
            resource,
            namespace,
            allowed,
        });
    }
    found
}

/// `GET path` through the API server; `Ok` on a 2xx answer within `timeout`.
async fn probe(client: &kube::Client, path: &str, timeout: std::time::Duration) -> Read<()> {
    tokio::time::timeout(timeout, ask(client, path))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

async fn ask(client: &kube::Client, path: &str) -> Read<()> {
    let req = http::Request::get(path)
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = client.send(req).await.map_err(|e| why(&e))?;
    match crate::http::answer("the API server", path, resp).await {
        Ok(_) => Ok(()),
        Err(crate::http::HttpError::Status { status, body, .. }) if status == 403 => {
            Err(format!("{FORBIDDEN}{body}"))
        }
        Err(crate::http::HttpError::Status { status, body, .. }) => {
            Err(format!("{status}: {body}"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Each operator replica's answer, by pod.
async fn replicas(
    mesh: &KubeMesh,
    timeout: std::time::Duration,
) -> Read<Vec<(String, Read<ProxiesAnswer>)>> {
    let admins = mesh
        .operators()
        .await
        .map_err(|e| match e.downcast_ref::<kube::Error>() {
            Some(k) => why(k),
            None => format!("{e:#}"),
        })?;
    let asks = admins.iter().map(|admin| async move {
        let pod = admin.pod().map_or_else(|| admin.to_string(), str::to_owned);
        let answer = admin
            .get_json::<ProxiesAnswer>(PROXIES_PATH, timeout)
            .await
            .map_err(|e| match e {
                crate::http::HttpError::Status { status, body, .. } if status == 403 => {
                    format!("{FORBIDDEN}{body}")
                }
                e => e.to_string(),
            });
        (pod, answer)
    });
    Ok(futures::future::join_all(asks).await)
}

/// Reads the cluster. Before install (`pre`), only what the cluster itself offers.
pub async fn gather(
    mesh: &KubeMesh,
    named_namespaces: Vec<String>,
    pre: bool,
    timeout: std::time::Duration,
) -> Snapshot {
    let client = mesh.client();
    let ns = mesh.mesh_namespace();
    let version = client.apiserver_version().await.map_err(|e| why(&e));
    let namespaces: Read<Vec<Namespace>> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| why(&e));
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| why(&e));
    let mut crds = Vec::new();
    for crd in release_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let read = get(Api::<CustomResourceDefinition>::all(client.clone()), &name).await;
        crds.push((name, read));
    }
    let mut snap = Snapshot {
        now: std::time::SystemTime::now(),
        mesh_namespace: ns.to_owned(),
        version,
        namespaces,
        named_namespaces,
        nodes,
        permissions: vec![],
        crds,
        operator: not_read(BEFORE),
        injector: not_read(BEFORE),
        webhook: not_read(BEFORE),
        webhook_health: not_read(BEFORE),
        ca: not_read(BEFORE),
        webhook_tls: not_read(BEFORE),
        pods: not_read(BEFORE),
        replicas: not_read(BEFORE),
    };
    if pre {
        snap.permissions = permissions(client).await;
        return snap;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    snap.operator = get(deployments.clone(), OPERATOR).await;
    snap.injector = get(deployments, INJECTOR).await;
    snap.webhook = get(
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        INJECTOR,
    )
    .await;
    snap.webhook_health = probe(
        client,
        &format!("/api/v1/namespaces/{ns}/services/https:{INJECTOR}:443/proxy/healthz"),
        timeout,
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    snap.ca = get(secrets.clone(), CA_SECRET).await;
    snap.webhook_tls = get(secrets, WEBHOOK_SECRET).await;
    snap.pods = match &snap.namespaces {
        Ok(all) => {
            let mut pods = Vec::new();
            let mut failed = None;
            for name in all
                .iter()
                .filter(|n| meshed(n))
                .filter_map(|n| n.metadata.name.as_ref())
            {
                match Api::<Pod>::namespaced(client.clone(), name)
                    .list(&ListParams::default())
                    .await
                {
                    Ok(l) => pods.extend(l.items),
                    Err(e) => failed = Some(format!("in {name}: {}", why(&e))),
                }
            }
            failed.map_or(Ok(pods), Err)
        }
        Err(e) => Err(format!("namespaces unreadable: {e}")),
    };
    snap.replicas = replicas(mesh, timeout).await;
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_needs_what_its_manifests_hold() {
        let needs = install_needs();
        let has = |g: &str, r: &str, ns: Option<&str>| {
            needs
                .iter()
                .any(|(gg, rr, nn)| gg == g && rr == r && nn.as_deref() == ns)
        };
        assert!(has(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None
        ));
        assert!(has(
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            None
        ));
        assert!(has("", "namespaces", None));
        assert!(has("apps", "deployments", Some("braid-system")));
        assert!(has("policy", "poddisruptionbudgets", Some("braid-system")));
        assert!(has("rbac.authorization.k8s.io", "clusterroles", None));
        assert_eq!(plural_of("NetworkPolicy"), "networkpolicies");
    }
}
