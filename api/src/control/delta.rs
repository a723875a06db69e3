//! Deltas on the config stream: what changed between two versions of one proxy's
//! config, so a change to one service costs its own bytes, not the whole mesh's.
//!
//! A proxy that sends `x-braid-accept: delta` may receive, after its first full config,
//! lines of the form `{"delta":{…}}` ([`DeltaLine`]). A delta names the version it
//! applies to (`base`, the last config this stream sent, applied or refused) and the
//! version it makes; sections it carries replace the base's, sections it leaves out are
//! unchanged, and `services` upserts and removes whole services by namespace and name.
//! A proxy that holds another base drops the stream and reconnects naming the version in
//! force; the operator then sends a full config.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::routes::ServiceRoutes;
use crate::config::{Detection, Inbound, Listener, Node, ProxyConfig, Service};

/// One delta line: `{"delta":{…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaLine {
    /// The delta.
    pub delta: ConfigDelta,
}

impl DeltaLine {
    /// Whether a stream line is a delta rather than a full config: a JSON object whose
    /// first member is `delta` (a full [`ProxyConfig`] has no such field).
    pub fn is_delta(line: &[u8]) -> bool {
        let rest = trim_start(line);
        let Some(rest) = rest.strip_prefix(b"{") else {
            return false;
        };
        trim_start(rest).starts_with(b"\"delta\"")
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// What changed from `base` to `version`. Every section is optional: absent, the base's
/// stands. `services` comes last on the wire (the operator shares its bytes between
/// every stream that carries the same change).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDelta {
    /// The version this delta makes.
    pub version: String,
    /// The version it applies to.
    pub base: String,
    /// The new `node`, if it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// The new `inbound`, if it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Inbound>,
    /// The new `routes`, whole, if they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Arc<[ServiceRoutes]>>,
    /// The new `listeners`, if they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<Listener>>,
    /// The new `detection`, if it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
    /// The new `trustBundle`, if it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<Arc<str>>,
    /// Services added, changed or removed (absent: none).
    #[serde(default, skip_serializing_if = "ServicesDelta::is_empty")]
    pub services: ServicesDelta,
}

/// Services added or changed (whole) and removed (by name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicesDelta {
    /// Services added or changed, each complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<Service>,
    /// Services removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<ServiceRef>,
}

impl ServicesDelta {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// A service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceRef {
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceRef {
    /// The name of `service`.
    pub fn of(service: &Service) -> Self {
        Self {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
        }
    }
}

/// A `namespace/name` that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not <namespace>/<name>")]
pub struct BadServiceRef(pub String);

impl std::str::FromStr for ServiceRef {
    type Err = BadServiceRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(BadServiceRef(s.to_owned())),
        }
    }
}

impl ServiceRef {
    /// A [`crate::control::SERVICES_HEADER`] value listing `names`.
    pub fn header<'a>(names: impl IntoIterator<Item = &'a ServiceRef>) -> String {
        names
            .into_iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The names of a [`crate::control::SERVICES_HEADER`] value; what is not
    /// `namespace/name` is left out.
    pub fn parse_header(value: &str) -> impl Iterator<Item = ServiceRef> + '_ {
        value.split(',').filter_map(|n| n.parse().ok())
    }
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A delta that does not fit the config it was applied to: the proxy resynchronises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// It applies to another version than the one held.
    #[error("the delta to {version} applies to {base}, but this proxy holds {held}")]
    Base {
        /// The version it makes.
        version: String,
        /// The version it applies to.
        base: String,
        /// The version held.
        held: String,
    },
    /// It removes a service the base does not have.
    #[error("the delta to {version} removes service {service}, which {base} does not have")]
    Unknown {
        /// The version it makes.
        version: String,
        /// The version it applies to.
        base: String,
        /// The service.
        service: ServiceRef,
    },
}

impl ConfigDelta {
    /// `base` with this delta applied. Services keep the base's order; a new one goes in
    /// namespace/name order (the operator's), so the result equals the operator's full
    /// config of `version`.
    pub fn apply(self, base: &ProxyConfig) -> Result<ProxyConfig, DeltaError> {
        if base.version != self.base {
            return Err(DeltaError::Base {
                version: self.version,
                base: self.base,
                held: base.version.clone(),
            });
        }
        let held: HashSet<(&str, &str)> = match self.services.remove.is_empty() {
            true => HashSet::new(),
            false => base.services.iter().map(order).collect(),
        };
        if let Some(missing) = self
            .services
            .remove
            .iter()
            .find(|r| !held.contains(&(r.namespace.as_str(), r.name.as_str())))
        {
            return Err(DeltaError::Unknown {
                service: missing.clone(),
                version: self.version,
                base: self.base,
            });
        }
        let services = if self.services.is_empty() {
            base.services.clone()
        } else {
            // Keyed, so a delta touching many services of a large mesh stays linear.
            let ServicesDelta { upsert, remove } = self.services;
            let remove: HashSet<(&str, &str)> = remove
                .iter()
                .map(|r| (r.namespace.as_str(), r.name.as_str()))
                .collect();
            let mut upsert: HashMap<(String, String), Service> = upsert
                .into_iter()
                .map(|s| ((s.namespace.clone(), s.name.clone()), s))
                .collect();
            let mut out: Vec<Service> = Vec::with_capacity(base.services.len() + upsert.len());
            for s in base.services.iter() {
                if remove.contains(&order(s)) {
                    continue;
                }
                let changed = upsert.remove(&(s.namespace.clone(), s.name.clone()));
                out.push(changed.unwrap_or_else(|| s.clone()));
            }
            let mut added: Vec<Service> = upsert.into_values().collect();
            added.sort_by(|a, b| order(a).cmp(&order(b)));
            for new in added {
                let at = out.partition_point(|s| order(s) < order(&new));
                out.insert(at, new);
            }
            out.into()
        };
        Ok(ProxyConfig {
            version: self.version,
            node: self.node.unwrap_or_else(|| base.node.clone()),
            inbound: self.inbound.unwrap_or_else(|| base.inbound.clone()),
            services,
            routes: self.routes.unwrap_or_else(|| base.routes.clone()),
            listeners: self.listeners.unwrap_or_else(|| base.listeners.clone()),
            detection: self.detection.unwrap_or_else(|| base.detection.clone()),
            trust_bundle: self
                .trust_bundle
                .unwrap_or_else(|| base.trust_bundle.clone()),
        })
    }
}

fn order(s: &Service) -> (&str, &str) {
    (&s.namespace, &s.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, vip: &str) -> Service {
        Service {
            name: name.into(),
            namespace: ns.into(),
            vips: vec![vip.parse().unwrap()],
            ..Default::default()
        }
    }

    fn base() -> ProxyConfig {
        ProxyConfig {
            version: "v1".into(),
            services: vec![
                svc("a", "one", "10.0.0.1"),
                svc("b", "two", "10.0.0.2"),
                svc("c", "three", "10.0.0.3"),
            ]
            .into(),
            trust_bundle: "roots".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_delta_upserts_removes_and_replaces_only_what_it_names() {
        let delta = ConfigDelta {
            version: "v2".into(),
            base: "v1".into(),
            routes: Some(Arc::new([])),
            services: ServicesDelta {
                upsert: vec![svc("b", "two", "10.0.0.22"), svc("b", "zz", "10.0.0.9")],
                remove: vec![ServiceRef {
                    namespace: "a".into(),
                    name: "one".into(),
                }],
            },
            ..Default::default()
        };
        let out = delta.apply(&base()).unwrap();
        assert_eq!(out.version, "v2");
        assert_eq!(&*out.trust_bundle, "roots", "absent sections stand");
        let names: Vec<_> = out.services.iter().map(ServiceRef::of).collect();
        assert_eq!(
            names.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["b/two", "b/zz", "c/three"],
            "changed in place, new in namespace/name order"
        );
        assert_eq!(out.services[0].vips[0].to_string(), "10.0.0.22");
    }

    #[test]
    fn a_delta_for_another_base_or_removing_what_is_not_held_is_refused() {
        let wrong = ConfigDelta {
            version: "v3".into(),
            base: "v2".into(),
            ..Default::default()
        };
        assert_eq!(
            wrong.apply(&base()).unwrap_err().to_string(),
            "the delta to v3 applies to v2, but this proxy holds v1"
        );
        let unknown = ConfigDelta {
            version: "v2".into(),
            base: "v1".into(),
            services: ServicesDelta {
                remove: vec![ServiceRef {
                    namespace: "a".into(),
                    name: "gone".into(),
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            unknown.apply(&base()).unwrap_err().to_string(),
            "the delta to v2 removes service a/gone, which v1 does not have"
        );
    }

    #[test]
    fn service_lists_travel_in_a_header() {
        let names = [
            ServiceRef {
                namespace: "shop".into(),
                name: "payments".into(),
            },
            ServiceRef {
                namespace: "ops".into(),
                name: "metrics".into(),
            },
        ];
        let header = ServiceRef::header(&names);
        assert_eq!(header, "shop/payments,ops/metrics");
        let back: Vec<ServiceRef> = ServiceRef::parse_header(&header).collect();
        assert_eq!(back, names);
        assert_eq!(ServiceRef::parse_header("a/b, ,x,c/d/e").count(), 1);
    }

    #[test]
    fn delta_lines_are_told_from_full_configs_by_their_first_member() {
        let line = serde_json::to_vec(&DeltaLine {
            delta: ConfigDelta::default(),
        })
        .unwrap();
        assert!(DeltaLine::is_delta(&line));
        assert!(DeltaLine::is_delta(b" { \"delta\": {}}"));
        assert!(!DeltaLine::is_delta(&serde_json::to_vec(&base()).unwrap()));
        assert!(!DeltaLine::is_delta(b"{\"version\":\"delta\"}"));
        assert!(!DeltaLine::is_delta(b""));
    }
}
