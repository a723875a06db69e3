//! A scripted Kubernetes API server for braidctl's Kubernetes paths: plain HTTP, the REST
//! layout of the real one (`/api/v1/...`, `/apis/GROUP/VERSION/...`, namespaced or not,
//! list and get with label selectors, 404 and 403 as `Status` objects),
//! SelfSubjectAccessReviews, and the pod and service proxy subresources answering what a
//! test scripts. Objects are JSON as a real server returns them (the fixtures captured
//! from one are served as they are).

// Test support: a failure here is the test failing.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the fake cluster holds.
#[derive(Clone, Default)]
pub struct Cluster {
    /// `/version`.
    pub version: Value,
    /// Every object, with `apiVersion`, `kind` and `metadata`.
    pub objects: Vec<Value>,
    /// Resources (plural) that get and list refuse with 403.
    pub forbidden: BTreeSet<String>,
    /// Resources (plural) a SelfSubjectAccessReview says may not be created.
    pub denied_create: BTreeSet<String>,
    /// Answers of the proxy subresources, by full path: status and body.
    pub proxied: BTreeMap<String, (u16, String)>,
}

impl Cluster {
    /// Adds an object.
    pub fn add(&mut self, object: Value) {
        self.objects.push(object);
    }

    /// The object of `kind` named `name`, to change it.
    pub fn object(&mut self, kind: &str, name: &str) -> &mut Value {
        self.objects
            .iter_mut()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    /// Removes the object of `kind` named `name`.
    pub fn remove(&mut self, kind: &str, name: &str) {
        self.objects
            .retain(|o| !(o["kind"] == kind && o["metadata"]["name"] == name));
    }
}

/// The plural resource of a kind.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    }
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn matches_selector(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
    })
}

async fn handle(
    State(cluster): State<Arc<Cluster>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if path == "/version" {
        return axum::Json(cluster.version.clone()).into_response();
    }
    if path.contains("/proxy/") || path.ends_with("/proxy") {
        return match cluster.proxied.get(&path) {
            Some((code, body)) => (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::OK),
                body.clone(),
            )
                .into_response(),
            None => status(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for {path}"),
            ),
        };
    }
    if method == Method::POST && path.ends_with("/selfsubjectaccessreviews") {
        let mut review: Value = serde_json::from_slice(&body).unwrap_or_default();
        let resource = review["spec"]["resourceAttributes"]["resource"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let allowed = !cluster.denied_create.contains(&resource);
        review["status"] = json!({"allowed": allowed});
        return (StatusCode::CREATED, axum::Json(review)).into_response();
    }
    if method != Method::GET {
        return status(405, "MethodNotAllowed", format!("{method} {path}"));
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => return status(404, "NotFound", format!("the server could not find {path}")),
    };
    let (namespace, resource, name) = match rest {
        ["namespaces"] => (None, "namespaces", None),
        ["namespaces", name] => (None, "namespaces", Some(*name)),
        ["namespaces", ns, resource] => (Some(*ns), *resource, None),
        ["namespaces", ns, resource, name] => (Some(*ns), *resource, Some(*name)),
        [resource] => (None, *resource, None),
        [resource, name] => (None, *resource, Some(*name)),
        _ => return status(404, "NotFound", format!("the server could not find {path}")),
    };
    // A custom resource is served only while its CRD exists, as a real server does.
    let builtin =
        group.is_empty() || group == "apps" || group == "policy" || group.ends_with("k8s.io");
    let crd = format!("{resource}.{group}");
    if !builtin
        && !cluster.objects.iter().any(|o| {
            o["kind"] == "CustomResourceDefinition" && o["metadata"]["name"] == crd.as_str()
        })
    {
        return status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({crd})"),
        );
    }
    if cluster.forbidden.contains(resource) {
        return status(
            403,
            "Forbidden",
            format!("{resource} is forbidden: User \"tester\" cannot list resource \"{resource}\""),
        );
    }
    let of_group = |o: &&Value| {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let g = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        g == group && plural(o["kind"].as_str().unwrap_or_default()) == resource
    };
    let in_namespace =
        |o: &&Value| namespace.is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns));
    let found: Vec<Value> = cluster
        .objects
        .iter()
        .filter(of_group)
        .filter(in_namespace)
        .cloned()
        .collect();
    match name {
        Some(name) => match found.into_iter().find(|o| o["metadata"]["name"] == name) {
            Some(o) => axum::Json(o).into_response(),
            None => status(404, "NotFound", format!("{resource} \"{name}\" not found")),
        },
        None => {
            let selector = query_param(&uri, "labelSelector").unwrap_or_default();
            let items: Vec<Value> = found
                .into_iter()
                .filter(|o| matches_selector(o, &selector))
                .collect();
            axum::Json(json!({
                "apiVersion": "v1", "kind": "List",
                "metadata": {"resourceVersion": "1"},
                "items": items,
            }))
            .into_response()
        }
    }
}

/// A fake API server running on its own thread, and a kubeconfig naming it.
pub struct FakeApi {
    /// Its address.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl FakeApi {
    /// Serves `cluster`.
    pub fn start(cluster: Cluster) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new()
                    .fallback(handle)
                    .with_state(Arc::new(cluster));
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                 clusters:\n- name: fake\n  cluster: {{server: 'http://{addr}'}}\n\
                 - name: nowhere\n  cluster: {{server: 'http://127.0.0.1:9'}}\n\
                 users:\n- name: tester\n  user: {{}}\n\
                 contexts:\n- name: fake\n  context: {{cluster: fake, user: tester}}\n\
                 - name: nowhere\n  context: {{cluster: nowhere, user: tester}}\n"
            ),
        )
        .unwrap();
        Self { addr, dir }
    }

    /// The kubeconfig's path.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The directory the kubeconfig is in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
