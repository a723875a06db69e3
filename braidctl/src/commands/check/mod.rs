//! `braidctl check [--pre]`: before install, whether the cluster can run braid; after,
//! whether the install works — CRDs, operator and injector, webhook and certificates,
//! and every meshed pod and proxy. Each finding is ✔, ⚠ or ✘ with what it means and
//! the fix; any ✘ makes the exit code 1.
//!
//! The checks are pure functions of a [`snapshot::Snapshot`] read from the cluster.

pub mod certs;
pub mod data_plane;
pub mod finding;
pub mod gather;
pub mod install;
pub mod kubernetes;
pub mod snapshot;

use std::process::ExitCode;

use finding::{Finding, Verdict};
use snapshot::Snapshot;

use crate::cli::{CheckArgs, Global};
use crate::mesh::Mesh;

/// The heading of what is found before install.
const BEFORE_INSTALL: &str = "Before install";

/// Runs `braidctl check`.
pub async fn run(global: &Global, args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Mesh::Kube(mesh) = Mesh::from(global).await? else {
        anyhow::bail!(
            "check looks at a Kubernetes cluster (its kubeconfig, --context); a mesh run from a directory has no install to check: use braidctl status and braidctl proxy-status"
        );
    };
    let named = global.namespace.iter().cloned().collect();
    let snap = gather::gather(&mesh, named, args.pre, global.timeout).await;
    let findings = evaluate(&snap, args.pre);
    crate::output::print(global.output, &findings, || finding::render(&findings))?;
    Ok(match findings.iter().any(|f| f.verdict == Verdict::Fail) {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    })
}

/// Every finding about `snap`, before install (`pre`) or after.
pub fn evaluate(snap: &Snapshot, pre: bool) -> Vec<Finding> {
    let mut found = match kubernetes::version(snap) {
        Ok(f) => f,
        Err(unreachable) => return vec![unreachable],
    };
    found.push(kubernetes::nodes(snap));
    found.extend(kubernetes::pod_security(snap));
    if pre {
        found.extend(kubernetes::permissions(snap));
        found.extend(installed_already(snap));
        return found;
    }
    found.extend(install::crds(snap));
    found.extend(install::control_plane(snap));
    found.extend(install::certificates(snap));
    found.extend(data_plane::data_plane(snap));
    found
}

/// Before install: braid's CRDs already there mean an install (or its leftovers).
fn installed_already(snap: &Snapshot) -> Vec<Finding> {
    let present: Vec<&str> = snap
        .crds
        .iter()
        .filter(|(_, c)| matches!(c, Ok(Some(_))))
        .map(|(n, _)| n.as_str())
        .collect();
    match present.is_empty() {
        true => vec![Finding::pass(BEFORE_INSTALL, "braid is not installed yet")],
        false => vec![Finding::warn(
            BEFORE_INSTALL,
            format!("braid's CRDs are installed already: {}", present.join(", ")),
            "braidctl check (without --pre) checks an installed mesh; installing again upgrades it in place",
        )],
    }
}
