//! An in-memory API server that kube-runtime's watchers and controllers can run against
//! (kube-fake-client answers no watch): objects by path, lists and watches with label
//! and field selectors, and writes (create, replace, server-side apply taken as the
//! whole object, JSON patch, delete) that are reported to the watches they concern.
//! Every request is recorded in the [`Log`](super::Log).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Answer, Log, Recorded, failure};

/// What braid's RBAC grants a list and watch of by name only (`resourceNames`).
const BY_NAME_ONLY: [&str; 3] = ["configmaps", "secrets", "mutatingwebhookconfigurations"];

/// Where an object lives: its resource (plural), namespace ("" when cluster-scoped) and
/// name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// `configmaps`, `namespaces`, `mutatingwebhookconfigurations`, …
    pub resource: String,
    /// The namespace, or "".
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl Key {
    /// A namespaced object.
    pub fn namespaced(resource: &str, namespace: &str, name: &str) -> Self {
        Self {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A cluster-scoped object.
    pub fn cluster(resource: &str, name: &str) -> Self {
        Self::namespaced(resource, "", name)
    }
}

/// What a request's path names.
struct Target {
    resource: String,
    /// `None`: every namespace (or a cluster-scoped resource).
    namespace: Option<String>,
    name: Option<String>,
}

/// `/api/v1/namespaces/shop/configmaps/x`, `/api/v1/configmaps`,
/// `/apis/g/v1/things/x`, `/api/v1/namespaces/shop` …
fn target(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/api/v1/").or_else(|| {
        let rest = path.strip_prefix("/apis/")?;
        let mut parts = rest.splitn(3, '/');
        parts.next()?;
        parts.next()?;
        parts.next()
    })?;
    let parts: Vec<&str> = rest.split('/').collect();
    let owned = |s: &str| s.to_string();
    Some(match parts.as_slice() {
        ["namespaces", ns, resource] => Target {
            resource: owned(resource),
            namespace: Some(owned(ns)),
            name: None,
        },
        ["namespaces", ns, resource, name] => Target {
            resource: owned(resource),
            namespace: Some(owned(ns)),
            name: Some(owned(name)),
        },
        [resource] => Target {
            resource: owned(resource),
            namespace: None,
            name: None,
        },
        [resource, name] => Target {
            resource: owned(resource),
            namespace: None,
            name: Some(owned(name)),
        },
        _ => return None,
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
}

/// Equality selectors only (`a=b,c=d`), what braid's watches use.
#[derive(Clone, Debug, Default)]
struct Selection {
    labels: Vec<(String, String)>,
    fields: Vec<(String, String)>,
}

fn pairs(text: Option<String>) -> Vec<(String, String)> {
    text.iter()
        .flat_map(|t| t.split(','))
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.trim_end_matches('=').to_string(), v.to_string())
        })
        .collect()
}

impl Selection {
    fn of(query: &str) -> Self {
        Self {
            labels: pairs(param(query, "labelSelector")),
            fields: pairs(param(query, "fieldSelector")),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        self.labels
            .iter()
            .all(|(k, v)| meta["labels"][k].as_str() == Some(v))
            && self.fields.iter().all(|(k, v)| match k.as_str() {
                "metadata.name" => meta["name"].as_str() == Some(v),
                "metadata.namespace" => meta["namespace"].as_str() == Some(v),
                other => panic!("field selector {other} not served"),
            })
    }
}

struct Watch {
    resource: String,
    namespace: Option<String>,
    selection: Selection,
    events: mpsc::UnboundedSender<Value>,
}

impl Watch {
    fn concerns(&self, key: &Key, object: &Value) -> bool {
        self.resource == key.resource
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && self.selection.matches(object)
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    watches: Vec<Watch>,
    version: u64,
    /// Requests answered with this failure instead: (method, path) → status code.
    failing: BTreeMap<(Method, String), u16>,
}

impl State {
    /// Stores (or, with `None`, removes) the object at `key` and tells the watches.
    fn write(&mut self, key: Key, object: Option<Value>) -> Option<Value> {
        self.version += 1;
        let object = object.map(|mut o| {
            o["metadata"]["resourceVersion"] = json!(self.version.to_string());
            o["metadata"]["name"] = json!(key.name);
            if !key.namespace.is_empty() {
                o["metadata"]["namespace"] = json!(key.namespace);
            }
            o
        });
        let before = match &object {
            Some(o) => self.objects.insert(key.clone(), o.clone()),
            None => self.objects.remove(&key),
        };
        self.watches.retain(|w| !w.events.is_closed());
        for watch in &self.watches {
            let was = before.as_ref().filter(|b| watch.concerns(&key, b));
            let is = object.as_ref().filter(|o| watch.concerns(&key, o));
            let event = match (was, is) {
                (None, Some(o)) => json!({"type": "ADDED", "object": o}),
                (Some(_), Some(o)) => json!({"type": "MODIFIED", "object": o}),
                (Some(b), None) => {
                    let mut gone = b.clone();
                    gone["metadata"]["resourceVersion"] = json!(self.version.to_string());
                    json!({"type": "DELETED", "object": gone})
                }
                (None, None) => continue,
            };
            let _ = watch.events.send(event);
        }
        object
    }
}

/// The in-memory API server.
#[derive(Clone, Default)]
pub struct Cluster {
    state: Arc<Mutex<State>>,
}

impl Cluster {
    /// A client of this cluster, and the log of its requests.
    pub fn client(&self) -> (kube::Client, Log) {
        let cluster = self.clone();
        super::client(move |r| cluster.answer(r))
    }

    /// Puts `object` at `key` (as another client would), telling the watches.
    pub fn put(&self, key: Key, object: Value) {
        self.state.lock().unwrap().write(key, Some(object));
    }

    /// Deletes the object at `key` (as another client would), telling the watches.
    pub fn delete(&self, key: &Key) {
        self.state.lock().unwrap().write(key.clone(), None);
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.state.lock().unwrap().objects.get(key).cloned()
    }

    /// Answers `method` on `path` with `code` from now on (`None`: normally again).
    pub fn fail(&self, method: Method, path: &str, code: Option<u16>) {
        let mut state = self.state.lock().unwrap();
        match code {
            Some(code) => state.failing.insert((method, path.to_string()), code),
            None => state.failing.remove(&(method, path.to_string())),
        };
    }

    /// How many watches of `resource` are open.
    pub fn watching(&self, resource: &str) -> usize {
        let state = self.state.lock().unwrap();
        state
            .watches
            .iter()
            .filter(|w| w.resource == resource && !w.events.is_closed())
            .count()
    }

    fn answer(&self, r: &Recorded) -> Answer {
        let mut state = self.state.lock().unwrap();
        if let Some(code) = state.failing.get(&(r.method.clone(), r.path.clone())) {
            return failure(*code, "InternalError", "failing, as the test asked").into();
        }
        let Some(t) = target(&r.path) else {
            return failure(404, "NotFound", &format!("no such path {}", r.path)).into();
        };
        let key = |name: &str| Key {
            resource: t.resource.clone(),
            namespace: t.namespace.clone().unwrap_or_default(),
            name: name.to_string(),
        };
        let not_found = || failure(404, "NotFound", &format!("{} not found", r.path)).into();
        // As RBAC granting these by name only would: a list or watch must select one
        // name, or it is refused.
        if r.method == Method::GET
            && t.name.is_none()
            && BY_NAME_ONLY.contains(&t.resource.as_str())
            && !Selection::of(&r.query)
                .fields
                .iter()
                .any(|(k, _)| k == "metadata.name")
        {
            return failure(
                403,
                "Forbidden",
                &format!("list {} without a metadata.name field selector", t.resource),
            )
            .into();
        }
        match (&r.method, &t.name) {
            (&Method::GET, None) if param(&r.query, "watch").as_deref() == Some("true") => {
                let (events, rx) = mpsc::unbounded_channel();
                state.watches.push(Watch {
                    resource: t.resource.clone(),
                    namespace: t.namespace.clone(),
                    selection: Selection::of(&r.query),
                    events,
                });
                Answer::Watch(rx)
            }
            (&Method::GET, None) => {
                let selection = Selection::of(&r.query);
                let items: Vec<&Value> = state
                    .objects
                    .iter()
                    .filter(|(k, o)| {
                        k.resource == t.resource
                            && t.namespace.as_ref().is_none_or(|ns| *ns == k.namespace)
                            && selection.matches(o)
                    })
                    .map(|(_, o)| o)
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": state.version.to_string()}, "items": items}),
                )
                    .into()
            }
            (&Method::GET, Some(name)) => match state.objects.get(&key(name)) {
                Some(o) => (StatusCode::OK, o.clone()).into(),
                None => not_found(),
            },
            (&Method::POST, None) => {
                let name = r.body["metadata"]["name"].as_str().unwrap_or_default();
                if state.objects.contains_key(&key(name)) {
                    return failure(409, "AlreadyExists", "already exists").into();
                }
                let stored = state.write(key(name), Some(r.body.clone()));
                (StatusCode::CREATED, stored.unwrap()).into()
            }
            (&Method::PUT, Some(name)) => {
                if !state.objects.contains_key(&key(name)) {
                    return not_found();
                }
                let stored = state.write(key(name), Some(r.body.clone()));
                (StatusCode::OK, stored.unwrap()).into()
            }
            (&Method::PATCH, Some(name)) if r.content_type.contains("json-patch") => {
                let Some(mut object) = state.objects.get(&key(name)).cloned() else {
                    return not_found();
                };
                let patch: json_patch::Patch = serde_json::from_value(r.body.clone()).unwrap();
                if json_patch::patch(&mut object, &patch).is_err() {
                    return failure(422, "Invalid", "the patch does not apply").into();
                }
                let stored = state.write(key(name), Some(object));
                (StatusCode::OK, stored.unwrap()).into()
            }
            (&Method::PATCH, Some(name)) if r.content_type.contains("apply-patch") => {
                let stored = state.write(key(name), Some(r.body.clone()));
                (StatusCode::OK, stored.unwrap()).into()
            }
            (&Method::DELETE, Some(name)) => {
                state.write(key(name), None);
                (
                    StatusCode::OK,
                    json!({"kind": "Status", "status": "Success"}),
                )
                    .into()
            }
            _ => failure(405, "MethodNotAllowed", &format!("{} {}", r.method, r.path)).into(),
        }
    }
}
