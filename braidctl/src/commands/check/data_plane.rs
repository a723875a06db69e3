//! Checks of the data plane: every pod of a meshed namespace runs the proxy, of the image
//! the injector puts in pods now, and every proxy is connected and holds the latest
//! config (from the operator replicas' `/debug/proxies`).

use k8s_openapi::api::core::v1::Pod;

use super::finding::Finding;
use super::install::{INJECTOR, image};
use super::kubernetes::{list, meshed};
use super::snapshot::Snapshot;
use crate::commands::proxy_status::merge;
use crate::mesh::kube::proxy_container as proxy;

/// The heading of these checks.
pub const CATEGORY: &str = "Data plane";
/// The injector's setting of the image it injects.
const PROXY_IMAGE_ENV: &str = "BRAID_PROXY_IMAGE";

/// `namespace/name`.
fn name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether the injector would have meshed `pod`: in a labelled namespace (the caller's
/// choice), not opted out, not on the host's network, not finished.
fn should_be_meshed(pod: &Pod) -> bool {
    let opted_out = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("braid.dev/inject"))
        .is_some_and(|v| v == "false");
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !opted_out && !host_network && !finished
}

/// The image the injector puts in pods now.
fn injected_image(snap: &Snapshot) -> Option<String> {
    let d = snap.injector.as_ref().ok()?.as_ref()?;
    let container = d
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?;
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == PROXY_IMAGE_ENV)
        .and_then(|e| e.value.clone())
        .or_else(|| image(d))
}

/// Namespaces of `pods`, each once, as `kubectl rollout restart` needs them.
fn restart_fix(pods: &[&Pod]) -> String {
    let mut namespaces: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.namespace.as_deref())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
        .iter()
        .map(|ns| format!("kubectl -n {ns} rollout restart deployment"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The data plane's findings.
pub fn data_plane(snap: &Snapshot) -> Vec<Finding> {
    let pods = match &snap.pods {
        Ok(p) => p,
        Err(e) => {
            return vec![Finding::unread(
                CATEGORY,
                "the pods of meshed namespaces",
                e,
                "kubectl get namespaces -l braid.dev/inject=enabled; kubectl get pods -n NAMESPACE",
                "list pods in the meshed namespaces",
            )];
        }
    };
    // The injector never meshes kube-system or braid's own namespace, labelled or not.
    let meshed_namespaces: Vec<String> = snap
        .namespaces
        .iter()
        .flatten()
        .filter(|ns| meshed(ns))
        .filter_map(|ns| ns.metadata.name.clone())
        .filter(|n| n != "kube-system" && *n != snap.mesh_namespace)
        .collect();
    let due: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .namespace
                .as_ref()
                .is_some_and(|ns| meshed_namespaces.contains(ns))
        })
        .filter(|p| should_be_meshed(p))
        .collect();
    let mut found = Vec::new();
    let bare: Vec<&Pod> = due.iter().copied().filter(|p| proxy(p).is_none()).collect();
    if !bare.is_empty() {
        found.push(
            Finding::fail(
                CATEGORY,
                format!(
                    "{} pod(s) of meshed namespaces run without the proxy: {}",
                    bare.len(),
                    list(&bare.iter().map(|p| name(p)).collect::<Vec<_>>())
                ),
                restart_fix(&bare),
            )
            .meaning("created before their namespace was labelled, or while the webhook was off: their traffic bypasses the mesh and its mTLS"),
        );
    }
    let injected: Vec<&Pod> = due.iter().copied().filter(|p| proxy(p).is_some()).collect();
    let want = injected_image(snap);
    if let Some(want) = &want {
        let old: Vec<&Pod> = injected
            .iter()
            .copied()
            .filter(|p| proxy(p).and_then(|c| c.image.as_ref()) != Some(want))
            .collect();
        if !old.is_empty() {
            found.push(
                Finding::warn(
                    CATEGORY,
                    format!(
                        "{} pod(s) run another proxy than the injector's {want}: {}",
                        old.len(),
                        list(&old.iter().map(|p| name(p)).collect::<Vec<_>>())
                    ),
                    restart_fix(&old),
                )
                .meaning("they were injected before the last upgrade of braid"),
            );
        } else if !injected.is_empty() {
            found.push(Finding::pass(
                CATEGORY,
                format!(
                    "{} meshed pod(s) in {} namespace(s) run the proxy the injector puts in pods now ({want})",
                    injected.len(),
                    meshed_namespaces.len()
                ),
            ));
        }
    } else if !injected.is_empty() {
        found.push(Finding::warn(
            CATEGORY,
            format!(
                "{} meshed pod(s) run the proxy; which image is current is unknown",
                injected.len()
            ),
            format!(
                "see that Deployment {}/{INJECTOR} exists",
                snap.mesh_namespace
            ),
        ));
    }
    if due.is_empty() {
        found.push(Finding::pass(CATEGORY, "no pod to mesh yet"));
    }
    found.extend(proxies(snap, &injected));
    found
}

/// Every running injected pod's proxy is known to the operator, connected and current.
fn proxies(snap: &Snapshot, injected: &[&Pod]) -> Vec<Finding> {
    let Ok(replicas) = &snap.replicas else {
        return vec![]; // Said under the control plane.
    };
    let answers: Vec<_> = replicas
        .iter()
        .filter_map(|(_, a)| a.clone().ok())
        .collect();
    if answers.is_empty() {
        return vec![];
    }
    // A proxy streams from, and reports through, one replica: with one silent, "never
    // heard from" and "no stream open" may only mean "that one's".
    let silent: Vec<String> = replicas
        .iter()
        .filter(|(_, a)| a.is_err())
        .map(|(pod, _)| pod.clone())
        .collect();
    // The leader hears every proxy's reports (followers relay them); a follower only
    // its own streams'. Without the leader's answer, "stale" is not known either.
    let leader_answered = answers.iter().any(|a| a.replica.leader);
    let report = merge(answers, vec![]);
    let running: Vec<String> = injected
        .iter()
        .filter(|p| crate::mesh::kube::running(p))
        .map(|p| name(p))
        .collect();
    let mut unheard = Vec::new();
    let mut stale = Vec::new();
    let mut unconnected = Vec::new();
    for pod in &running {
        match report.proxies.iter().find(|l| l.pod == *pod) {
            None => unheard.push(pod.clone()),
            Some(l) if !l.current => stale.push(format!(
                "{pod} (holds {}, latest {})",
                l.applied_version.as_deref().unwrap_or("nothing"),
                l.expected_version.as_deref().unwrap_or("?")
            )),
            Some(l) if l.streams_from.is_none() => unconnected.push(pod.clone()),
            Some(_) => {}
        }
    }
    let logs = "kubectl -n NAMESPACE logs POD -c braid-proxy; braidctl proxy-status";
    let mut found = Vec::new();
    if !silent.is_empty() {
        let mut unjudged = unheard.len() + unconnected.len();
        unheard.clear();
        unconnected.clear();
        if !leader_answered {
            unjudged += stale.len();
            stale.clear();
        }
        if unjudged > 0 {
            found.push(Finding::warn(
                CATEGORY,
                format!(
                    "{unjudged} proxy(ies) not judged: they may stream from {}, which did not answer",
                    list(&silent)
                ),
                "see why that replica does not answer (above), then check again",
            ));
        }
    }
    if !unheard.is_empty() {
        found.push(
            Finding::fail(
                CATEGORY,
                format!(
                    "{} proxy(ies) never heard from by an operator replica: {}",
                    unheard.len(),
                    list(&unheard)
                ),
                logs,
            )
            .meaning("they hold no config from this operator: no routes, no certificate"),
        );
    }
    if !stale.is_empty() {
        found.push(Finding::fail(
            CATEGORY,
            format!(
                "{} proxy(ies) hold an old config: {}",
                stale.len(),
                list(&stale)
            ),
            logs,
        ));
    }
    if !unconnected.is_empty() {
        found.push(
            Finding::fail(
                CATEGORY,
                format!(
                    "{} proxy(ies) have no config stream open: {}",
                    unconnected.len(),
                    list(&unconnected)
                ),
                logs,
            )
            .meaning("they miss every change until they reconnect"),
        );
    }
    if found.is_empty() && !running.is_empty() && silent.is_empty() {
        found.push(Finding::pass(
            CATEGORY,
            format!(
                "all {} running proxies are connected and hold the latest config",
                running.len()
            ),
        ));
    }
    found
}
