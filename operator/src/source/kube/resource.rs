//! braid resources as watched (untyped) to [`Observed`] ones, decoding each version once.

use std::collections::HashMap;
use std::sync::Arc;

use braid_crds::decode::Resource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;

use crate::registry::{Kind, ObjectKey, Observed};

/// The annotation `kubectl apply` keeps a copy of the whole object in: large, and of no use
/// to the compiler.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What of a watched object is decoded: apiVersion, kind, spec and the metadata users
/// set. Not the status (the operator writes it; a status write must not look like a
/// change), nor `resourceVersion` or `managedFields` (they change with every status write).
pub fn decodable(kind: Kind, obj: &DynamicObject) -> serde_json::Value {
    let m = &obj.metadata;
    let metadata = ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        generation: m.generation,
        creation_timestamp: m.creation_timestamp.clone(),
        labels: m.labels.clone(),
        annotations: m.annotations.as_ref().map(|a| {
            let mut a = a.clone();
            a.remove(LAST_APPLIED);
            a
        }),
        ..Default::default()
    };
    serde_json::json!({
        "apiVersion": format!("{}/{}", braid_crds::GROUP, braid_crds::VERSION),
        "kind": kind.as_str(),
        "metadata": metadata,
        "spec": obj.data.get("spec").cloned().unwrap_or(serde_json::Value::Null),
    })
}

/// `obj` as observed: decoded and validated with [`braid_crds::decode`], which checks
/// again what the API server's schema did (resources from a cluster that skips CEL, or
/// from before a CRD upgrade) and what a schema cannot say, each error with its field
/// path. `None` for an object without a namespace or name.
pub fn observe<T: Resource>(kind: Kind, obj: &DynamicObject) -> Option<Observed<T>> {
    observe_value(&decodable(kind, obj))
}

fn observe_value<T: Resource>(value: &serde_json::Value) -> Option<Observed<T>> {
    let meta = value.get("metadata")?;
    let text = |field: &str| meta.get(field).and_then(|v| v.as_str());
    let key = ObjectKey::new(text("namespace")?, text("name")?);
    let generation = meta.get("generation").and_then(|g| g.as_i64());
    let created = text("creationTimestamp").map(str::to_string);
    let current = braid_crds::decode::<T>(value).map(Arc::new);
    Some(Observed::new(key, generation, created, current))
}

/// Remembers the last decoding of each resource, so a snapshot rebuilt for an unrelated
/// change (a pod starting) does not decode and validate every resource again.
#[derive(Debug)]
pub struct Decoded<T> {
    kind: Kind,
    seen: HashMap<ObjectKey, (serde_json::Value, Observed<T>)>,
}

impl<T: Resource + Clone> Decoded<T> {
    /// An empty cache for resources of `kind`.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            seen: HashMap::new(),
        }
    }

    /// Every object of `objects` as observed, decoding only those whose decodable part
    /// changed; forgets the rest.
    pub fn observe_all<'a>(
        &mut self,
        objects: impl IntoIterator<Item = &'a DynamicObject>,
    ) -> Vec<Observed<T>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        for obj in objects {
            let value = decodable(self.kind, obj);
            let reused = obj
                .metadata
                .namespace
                .as_deref()
                .zip(obj.metadata.name.as_deref())
                .map(|(ns, name)| ObjectKey::new(ns, name))
                .and_then(|key| self.seen.remove(&key))
                .filter(|(before, _)| *before == value);
            let observed = match reused {
                Some((_, observed)) => observed,
                None => match observe_value::<T>(&value) {
                    Some(o) => o,
                    None => continue,
                },
            };
            out.push(observed.clone());
            seen.insert(observed.key.clone(), (value, observed));
        }
        self.seen = seen;
        out
    }
}

#[cfg(test)]
mod tests {
    use braid_crds::TrafficRoute;
    use kube::api::ApiResource;

    use super::*;

    fn route(generation: i64, host: &str) -> DynamicObject {
        let ar = ApiResource::erase::<TrafficRoute>(&());
        let mut obj = DynamicObject::new("payments", &ar).within("shop");
        obj.metadata.generation = Some(generation);
        obj.metadata.uid = Some("u-1".into());
        obj.metadata.resource_version = Some(format!("{generation}00"));
        obj.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-22T01:02:03Z".parse().unwrap(),
            ));
        obj.data = serde_json::json!({
            "spec": {
                "host": host,
                "groups": [{"name": "v1", "labels": {"version": "v1"}}],
                "rules": [{"name": "all", "route": [{"group": "v1", "weight": 100}]}]
            },
            "status": {"observedGeneration": generation - 1}
        });
        obj
    }

    #[test]
    fn a_valid_resource_is_in_force() {
        let o: Observed<TrafficRoute> = observe(Kind::TrafficRoute, &route(3, "payments")).unwrap();
        assert_eq!(o.key, ObjectKey::new("shop", "payments"));
        assert_eq!(o.generation, Some(3));
        assert_eq!(o.created.as_deref(), Some("2026-11-22T01:02:03Z"));
        let r = o.current.as_ref().unwrap();
        assert_eq!(r.spec.host, "payments");
        // The status the operator wrote is not part of what the compiler sees.
        assert!(r.status.is_none());
        assert!(o.accepted.is_some());
    }

    #[test]
    fn an_invalid_resource_carries_its_errors() {
        let mut obj = route(1, "payments");
        obj.data["spec"]["rules"][0]["route"][0]["group"] = "v9".into();
        let o: Observed<TrafficRoute> = observe(Kind::TrafficRoute, &obj).unwrap();
        let errors = o.current.unwrap_err();
        assert!(
            errors.summary().contains("spec.rules[0].route[0]"),
            "{}",
            errors.summary()
        );
        assert!(o.accepted.is_none());
    }

    #[test]
    fn unchanged_resources_are_not_decoded_again() {
        let mut cache = Decoded::<TrafficRoute>::new(Kind::TrafficRoute);
        let first = cache.observe_all([&route(1, "payments")]);
        // A status write: new resourceVersion and status, same spec.
        let mut status_only = route(1, "payments");
        status_only.metadata.resource_version = Some("999".into());
        status_only.data["status"] = serde_json::json!({"observedGeneration": 1});
        let second = cache.observe_all([&status_only]);
        assert!(Arc::ptr_eq(
            first[0].current.as_ref().unwrap(),
            second[0].current.as_ref().unwrap()
        ));
        let third = cache.observe_all([&route(2, "payments.shop")]);
        assert_eq!(
            third[0].current.as_ref().unwrap().spec.host,
            "payments.shop"
        );
        assert!(cache.observe_all([]).is_empty());
        assert!(cache.seen.is_empty());
    }
}
