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
    /// Where `pods/portforward` connects, by `namespace/pod:port`.
    pub forwards: BTreeMap<String, SocketAddr>,
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

/// `status.podIP=10.0.0.1,metadata.name=x`: each dotted path equal to its value.
fn matches_fields(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (path, v) = term.split_once('=').unwrap_or((term, ""));
        let found = path.split('.').fold(object, |o, k| &o[k]);
        found.as_str() == Some(v)
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

/// `pods/NAME/portforward?ports=P` as the API server serves it to kube-rs: a WebSocket
/// of subprotocol `v4.channel.k8s.io`, channel 0 the port's data and 1 its errors, each
/// opened with the port number (little-endian), the data piped to `target`.
fn portforward(mut req: axum::extract::Request, target: SocketAddr, port: u16) -> Response {
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key, protocol::Role};
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return status(400, "BadRequest", "not a WebSocket upgrade".into());
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = upgrade.await.unwrap();
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let (mut sink, mut from_client) = ws.split();
        let [lo, hi] = port.to_le_bytes();
        sink.send(Message::binary(vec![0, lo, hi])).await.unwrap();
        sink.send(Message::binary(vec![1, lo, hi])).await.unwrap();
        let tcp = tokio::net::TcpStream::connect(target).await.unwrap();
        let (mut from_pod, mut to_pod) = tcp.into_split();
        let upstream = async move {
            while let Some(Ok(msg)) = from_client.next().await {
                match msg {
                    Message::Binary(b)
                        if b.first() == Some(&0) && to_pod.write_all(&b[1..]).await.is_err() =>
                    {
                        break;
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        };
        let downstream = async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from_pod.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut frame = vec![0u8];
                frame.extend_from_slice(&buf[..n]);
                if sink.send(Message::binary(frame)).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        };
        tokio::join!(upstream, downstream);
    });
    axum::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(axum::body::Body::empty())
        .unwrap()
}

async fn handle(State(cluster): State<Arc<Cluster>>, req: axum::extract::Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = uri.path().to_owned();
    if path.ends_with("/portforward") {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let port: u16 = query_param(&uri, "ports")
            .and_then(|p| p.parse().ok())
            .unwrap_or_default();
        if let ["api", "v1", "namespaces", ns, "pods", pod, "portforward"] = segments.as_slice()
            && let Some(target) = cluster.forwards.get(&format!("{ns}/{pod}:{port}"))
        {
            return portforward(req, *target, port);
        }
        return status(
            404,
            "NotFound",
            format!("nothing listens for {path} port {port}"),
        );
    }
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
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
            let fields = query_param(&uri, "fieldSelector").unwrap_or_default();
            let items: Vec<Value> = found
                .into_iter()
                .filter(|o| matches_selector(o, &selector))
                .filter(|o| matches_fields(o, &fields))
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

/// Serves `app` on its own thread; its address.
pub fn serve(app: axum::Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
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
        let addr = serve(
            axum::Router::new()
                .fallback(handle)
                .with_state(Arc::new(cluster)),
        );
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
