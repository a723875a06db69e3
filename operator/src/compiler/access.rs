//! What AccessPolicies put in proxies' configs. Every accepted policy is compiled once
//! per compile, names resolved: service accounts and namespaces become identity
//! patterns, workload labels the identity and address of each meshed pod that carries
//! them now. A workload's proxy gets the policies of its namespace whose selector picks
//! it, oldest first, for its inbound side.

use std::sync::Arc;

use braid_api::config::access::{AccessAction, AccessMode, AccessPolicy, AccessRule, Source};
use braid_api::config::routes::{PathMatch, RequestMatch};
use braid_api::identity::WorkloadId;
use braid_crds::access_policy::{
    AccessAction as CrdAction, AccessMode as CrdMode, AccessRule as CrdRule, HttpCondition,
    Source as CrdSource,
};
use braid_crds::common::WorkloadSelector;

use super::Options;
use super::routes::{header_match, method_name, path_match};
use crate::registry::{ObjectKey, Snapshot, Workload};

/// Every AccessPolicy in force, compiled, oldest first: what the compile compares with
/// the last one's to tell whether any workload's policies may have changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessSet {
    policies: Vec<Compiled>,
}

#[derive(Clone, Debug, PartialEq)]
struct Compiled {
    namespace: String,
    selector: WorkloadSelector,
    policy: Arc<AccessPolicy>,
}

impl AccessSet {
    /// The policies of `snapshot` compiled, their modes as `mode_of` says.
    pub fn of(
        snapshot: &Snapshot,
        opts: &Options,
        mode_of: impl Fn(&ObjectKey, &braid_crds::AccessPolicy) -> AccessMode,
    ) -> Self {
        let policies = snapshot
            .access_policies_oldest_first()
            .into_iter()
            .map(|(key, p)| Compiled {
                namespace: key.namespace.clone(),
                selector: p.spec.selector.clone(),
                policy: Arc::new(compile(key, p, mode_of(key, p), snapshot, opts)),
            })
            .collect();
        Self { policies }
    }

    /// The policies covering `w`'s inbound side, oldest first.
    pub fn for_workload(&self, w: &Workload) -> Vec<AccessPolicy> {
        self.policies
            .iter()
            .filter(|c| c.namespace == w.key.namespace && c.selector.matches(&w.labels))
            .map(|c| (*c.policy).clone())
            .collect()
    }
}

/// The mode proxies apply: the spec's, or with a rollout, Audit until its status
/// records that the leader enforced it (`enforced`), read back by every replica.
pub fn mode(policy: &braid_crds::AccessPolicy, enforced: bool) -> AccessMode {
    match (policy.spec.mode, &policy.spec.rollout) {
        (_, Some(_)) if enforced => AccessMode::Enforce,
        (_, Some(_)) | (CrdMode::Audit, None) => AccessMode::Audit,
        (CrdMode::Enforce, None) => AccessMode::Enforce,
    }
}

fn compile(
    key: &ObjectKey,
    p: &braid_crds::AccessPolicy,
    mode: AccessMode,
    snapshot: &Snapshot,
    opts: &Options,
) -> AccessPolicy {
    let spec = &p.spec;
    AccessPolicy {
        name: key.to_string(),
        ports: spec.ports.clone(),
        action: match spec.action {
            CrdAction::Allow => AccessAction::Allow,
            CrdAction::Deny => AccessAction::Deny,
        },
        mode,
        rules: spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(i, r, spec.action, &key.namespace, snapshot, opts))
            .collect(),
    }
}

fn rule(
    index: usize,
    r: &CrdRule,
    action: CrdAction,
    namespace: &str,
    snapshot: &Snapshot,
    opts: &Options,
) -> AccessRule {
    let from = (!r.from.is_empty()).then(|| {
        let mut out = Vec::new();
        for s in &r.from {
            sources(s, action, namespace, snapshot, opts, &mut out);
        }
        out.dedup();
        out
    });
    AccessRule {
        name: r.name_at(index),
        from,
        http: r.http.as_ref().map(http),
    }
}

/// What one source of the resource stands for now. Workload labels name pods: to let
/// one in takes its identity and its address (an address alone could be another's); to
/// refuse one, its address is enough, so a pod without a proxy (plaintext, no identity)
/// is refused too.
fn sources(
    s: &CrdSource,
    action: CrdAction,
    namespace: &str,
    snapshot: &Snapshot,
    opts: &Options,
    out: &mut Vec<Source>,
) {
    let ns = s.namespace.as_deref().unwrap_or(namespace);
    let td = &opts.trust_domain;
    if let Some(id) = &s.identity {
        out.push(Source::Identity(id.clone()));
    } else if let Some(sa) = &s.service_account {
        out.push(Source::Identity(WorkloadId::new(td, ns, sa).to_string()));
    } else if let Some(labels) = &s.workload_labels {
        let from = ObjectKey::new(ns, "");
        let pods = snapshot
            .workloads
            .range(from..)
            .take_while(|(k, _)| k.namespace == ns)
            .map(|(_, w)| w)
            .filter(|w| labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)));
        for w in pods {
            match action {
                CrdAction::Deny => out.extend(w.ips.iter().map(|&a| Source::Address(a))),
                CrdAction::Allow if w.meshed => {
                    let identity = opts.identity(w).0;
                    out.extend(w.ips.iter().map(|&address| Source::Pod {
                        identity: identity.clone(),
                        address,
                    }));
                }
                CrdAction::Allow => {}
            }
        }
    } else if s.meshed == Some(true) {
        out.push(Source::Meshed);
    } else if s.unauthenticated == Some(true) {
        out.push(Source::Unauthenticated);
    } else if let Some(ns) = &s.namespace {
        out.push(Source::Identity(format!("spiffe://{td}/ns/{ns}/sa/*")));
    }
}

/// The HTTP part as the proxy's request matches: every method with every path (each
/// list absent counts as "any"), all with the headers.
fn http(h: &HttpCondition) -> Vec<RequestMatch> {
    let headers: Vec<_> = h.headers.iter().filter_map(header_match).collect();
    let methods: Vec<Option<String>> = match h.methods.is_empty() {
        true => vec![None],
        false => h
            .methods
            .iter()
            .filter_map(|&m| method_name(m).map(Some))
            .collect(),
    };
    let paths: Vec<Option<PathMatch>> = match h.paths.is_empty() {
        true => vec![None],
        false => h
            .paths
            .iter()
            .filter_map(|p| path_match(p).map(Some))
            .collect(),
    };
    let mut out = Vec::with_capacity(methods.len() * paths.len());
    for method in &methods {
        for path in &paths {
            out.push(RequestMatch {
                headers: headers.clone(),
                path: path.clone(),
                method: method.clone(),
            });
        }
    }
    out
}
