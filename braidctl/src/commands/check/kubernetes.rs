//! Checks of the cluster itself, before and after install: its version and native
//! sidecars, its nodes, the Pod Security level of the namespaces to mesh, and (before
//! install) whether the user may create what the install holds.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::version::Info;

use super::finding::Finding;
use super::snapshot::Snapshot;
use crate::mesh::kube::INJECT_LABEL;

/// The heading of these checks.
pub const CATEGORY: &str = "Kubernetes";
/// The heading of the permission checks.
pub const PERMISSIONS: &str = "Permissions to install";
/// The oldest Kubernetes braid supports (1.x).
pub const OLDEST_MINOR: u32 = 28;
/// The first with native sidecars on by default.
pub const NATIVE_SIDECARS_MINOR: u32 = braid_injector::native_sidecars::FIRST_MINOR;
/// Pod Security's label for the enforced level.
const PSS_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// … and for the levels that only warn or audit.
const PSS_WARN: [&str; 2] = [
    "pod-security.kubernetes.io/warn",
    "pod-security.kubernetes.io/audit",
];

/// `(major, minor)` as numbers, read as the injector reads them; managed clusters report
/// minors such as `"29+"`.
pub fn version_of(info: &Info) -> Option<(u32, u32)> {
    braid_injector::native_sidecars::version(info).ok()
}

/// The API server answers, is new enough, and runs native sidecars. `None` when it does
/// not answer: nothing else can be checked.
pub fn version(snap: &Snapshot) -> Result<Vec<Finding>, Finding> {
    let info = match &snap.version {
        Ok(info) => info,
        Err(e) => {
            return Err(Finding::fail(
                CATEGORY,
                format!("cannot reach the API server: {e}"),
                "check the kubeconfig's cluster and credentials (--kubeconfig, --context), or pass --dir for a mesh run from a directory",
            ));
        }
    };
    let mut found = vec![Finding::pass(
        CATEGORY,
        format!("the API server answers: Kubernetes {}", info.git_version),
    )];
    let Some((major, minor)) = version_of(info) else {
        found.push(Finding::warn(
            CATEGORY,
            format!(
                "the API server reports version {:?}.{:?}, which braidctl cannot read",
                info.major, info.minor
            ),
            "make sure the cluster runs Kubernetes 1.28 or newer",
        ));
        return Ok(found);
    };
    if (major, minor) < (1, OLDEST_MINOR) {
        found.push(
            Finding::fail(
                CATEGORY,
                format!("Kubernetes {major}.{minor} is older than 1.{OLDEST_MINOR}"),
                format!("upgrade the cluster to 1.{OLDEST_MINOR} or newer"),
            )
            .meaning("braid's CRDs use CEL rules and fields older API servers refuse or drop"),
        );
        return Ok(found);
    }
    found.push(Finding::pass(
        CATEGORY,
        format!("Kubernetes {major}.{minor} is 1.{OLDEST_MINOR} or newer"),
    ));
    if (major, minor) < (1, NATIVE_SIDECARS_MINOR) {
        found.push(
            Finding::warn(
                CATEGORY,
                format!("Kubernetes {major}.{minor} runs native sidecars only with the SidecarContainers feature gate"),
                format!(
                    "upgrade to 1.{NATIVE_SIDECARS_MINOR}+, or enable the gate and run the injector with --native-sidecars true"
                ),
            )
            .meaning(
                "without them the proxy is the pod's first container, with a postStart hook: Jobs never complete and init containers run without the mesh",
            ),
        );
    } else {
        found.push(Finding::pass(
            CATEGORY,
            "native sidecars: the proxy starts before the app's containers and stops after them",
        ));
    }
    Ok(found)
}

/// What the nodes show of where braid-init will run.
pub fn nodes(snap: &Snapshot) -> Finding {
    let nodes = match &snap.nodes {
        Ok(nodes) => nodes,
        Err(e) => {
            return Finding::pass(
                CATEGORY,
                "nodes not visible to you: braid-init picks each node's iptables backend (legacy or nft) when a pod starts",
            )
            .meaning(format!("listing nodes: {e}"));
        }
    };
    let info =
        |n: &k8s_openapi::api::core::v1::Node| n.status.as_ref().and_then(|s| s.node_info.clone());
    let windows: Vec<String> = nodes
        .iter()
        .filter(|n| info(n).is_some_and(|i| i.operating_system == "windows"))
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    if !windows.is_empty() {
        return Finding::warn(
            CATEGORY,
            format!(
                "{} Windows node(s) ({}): braid-init and the proxy run on Linux only",
                windows.len(),
                list(&windows)
            ),
            "keep meshed workloads on Linux nodes (nodeSelector kubernetes.io/os: linux)",
        );
    }
    let mut kernels: Vec<String> = nodes
        .iter()
        .filter_map(|n| info(n).map(|i| i.kernel_version))
        .collect();
    kernels.sort();
    kernels.dedup();
    Finding::pass(
        CATEGORY,
        format!(
            "{} Linux node(s), kernel {}: braid-init uses the iptables backend each node already uses (legacy or nft)",
            nodes.len(),
            if kernels.is_empty() {
                "unknown".to_owned()
            } else {
                kernels.join(", ")
            }
        ),
    )
}

/// Whether `ns` is labelled for injection.
pub fn meshed(ns: &Namespace) -> bool {
    ns.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT_LABEL))
        .is_some_and(|v| v == "enabled")
}

/// The Pod Security level of each namespace to mesh (those labelled, and those named
/// with `-n`) against braid-init's needs: NET_ADMIN and NET_RAW, as root.
pub fn pod_security(snap: &Snapshot) -> Vec<Finding> {
    let namespaces = match &snap.namespaces {
        Ok(n) => n,
        Err(e) => {
            return vec![Finding::warn(
                CATEGORY,
                format!("cannot read namespaces ({e}): their Pod Security levels are not checked"),
                "run braidctl check as a user who may list namespaces",
            )];
        }
    };
    let targets: Vec<&Namespace> = namespaces
        .iter()
        .filter(|ns| {
            meshed(ns)
                || ns
                    .metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| snap.named_namespaces.contains(n))
        })
        .collect();
    if targets.is_empty() {
        return vec![Finding::pass(
            CATEGORY,
            format!(
                "no namespace is labelled {INJECT_LABEL}=enabled yet (pass -n NAMESPACE to check one before labelling it)"
            ),
        )];
    }
    let mut found = Vec::new();
    let mut admitted = Vec::new();
    for ns in targets {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let refuses =
            |level: Option<&String>| level.is_some_and(|l| l == "baseline" || l == "restricted");
        if refuses(labels.get(PSS_ENFORCE)) {
            let level = labels.get(PSS_ENFORCE).cloned().unwrap_or_default();
            found.push(
                Finding::fail(
                    CATEGORY,
                    format!("namespace {name} enforces Pod Security level {level}, which refuses braid-init"),
                    format!("kubectl label namespace {name} {PSS_ENFORCE}=privileged --overwrite"),
                )
                .meaning("braid-init needs NET_ADMIN and NET_RAW and runs as root to set up iptables: every meshed pod there would be rejected"),
            );
            continue;
        }
        if let Some(key) = PSS_WARN.iter().find(|k| refuses(labels.get(**k))) {
            let level = labels.get(*key).cloned().unwrap_or_default();
            found.push(Finding::warn(
                CATEGORY,
                format!("namespace {name} has {key}={level}: every meshed pod is admitted with a warning about braid-init"),
                format!("kubectl label namespace {name} {key}=privileged --overwrite"),
            ));
            continue;
        }
        admitted.push(name);
    }
    if !admitted.is_empty() {
        found.push(Finding::pass(
            CATEGORY,
            format!(
                "Pod Security admits braid-init in {} namespace(s): {}",
                admitted.len(),
                list(&admitted)
            ),
        ));
    }
    found
}

/// Whether the user may create everything the install holds (before install).
pub fn permissions(snap: &Snapshot) -> Vec<Finding> {
    let mut found = Vec::new();
    for p in &snap.permissions {
        let what = format!(
            "{}{}{}",
            p.resource,
            if p.group.is_empty() {
                String::new()
            } else {
                format!(".{}", p.group)
            },
            p.namespace
                .as_ref()
                .map_or_else(String::new, |ns| format!(" in {ns}"))
        );
        match &p.allowed {
            Ok(true) => {}
            Ok(false) => found.push(Finding::fail(
                PERMISSIONS,
                format!("you may not {} {what}", p.verb),
                "install as a cluster administrator, or have one grant you create on it",
            )),
            Err(e) => found.push(Finding::warn(
                PERMISSIONS,
                format!("cannot ask whether you may {} {what}: {e}", p.verb),
                "check that the API server serves authorization.k8s.io/v1",
            )),
        }
    }
    if found.is_empty() {
        found.push(Finding::pass(
            PERMISSIONS,
            format!(
                "you may create every kind of object the install holds ({})",
                snap.permissions.len()
            ),
        ));
    }
    found
}

/// Up to five names, and how many more.
pub fn list(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            git_version: format!("v{major}.{minor}.0"),
            ..Info::default()
        }
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.into());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        ns
    }

    #[test]
    fn versions_are_judged_by_their_digits() {
        assert_eq!(version_of(&info("1", "29+")), Some((1, 29)));
        assert_eq!(version_of(&info("1", "")), None);
        let mut snap = Snapshot::unread(SystemTime::now());
        assert!(version(&snap).is_err());
        snap.version = Ok(info("1", "27"));
        let v = version(&snap).unwrap();
        assert_eq!(
            v.last().unwrap().verdict,
            super::super::finding::Verdict::Fail
        );
        snap.version = Ok(info("1", "28"));
        let v = version(&snap).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].verdict, super::super::finding::Verdict::Warn);
        snap.version = Ok(info("1", "32+"));
        assert!(
            version(&snap)
                .unwrap()
                .iter()
                .all(|f| f.verdict == super::super::finding::Verdict::Pass)
        );
    }

    #[test]
    fn pod_security_refuses_braid_init_at_baseline_and_restricted_only() {
        let mut snap = Snapshot::unread(SystemTime::now());
        snap.namespaces = Ok(vec![
            namespace(
                "shop",
                &[(INJECT_LABEL, "enabled"), (PSS_ENFORCE, "restricted")],
            ),
            namespace(
                "web",
                &[(INJECT_LABEL, "enabled"), (PSS_WARN[0], "baseline")],
            ),
            namespace(
                "ok",
                &[(INJECT_LABEL, "enabled"), (PSS_ENFORCE, "privileged")],
            ),
            namespace("new", &[]),
            namespace("other", &[(PSS_ENFORCE, "restricted")]),
        ]);
        snap.named_namespaces = vec!["new".into()];
        let found = pod_security(&snap);
        let titles: Vec<(&str, super::super::finding::Verdict)> = found
            .iter()
            .map(|f| (f.title.as_str(), f.verdict))
            .collect();
        use super::super::finding::Verdict::*;
        assert_eq!(
            titles,
            [
                (
                    "namespace shop enforces Pod Security level restricted, which refuses braid-init",
                    Fail
                ),
                (
                    "namespace web has pod-security.kubernetes.io/warn=baseline: every meshed pod is admitted with a warning about braid-init",
                    Warn
                ),
                (
                    "Pod Security admits braid-init in 2 namespace(s): ok, new",
                    Pass
                ),
            ]
        );
        assert_eq!(
            found[0].fix.as_deref(),
            Some(
                "kubectl label namespace shop pod-security.kubernetes.io/enforce=privileged --overwrite"
            )
        );
    }

    #[test]
    fn a_long_list_is_cut_at_five() {
        let names: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        assert_eq!(list(&names), "p0, p1, p2, p3, p4 and 2 more");
    }
}
