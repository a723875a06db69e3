//! The directory source (`--source dir:PATH`): a mesh without Kubernetes.
//!
//! The directory holds `registry.yaml` (services and workloads, see [`registry_file`])
//! and any number of `*.yaml`/`*.yml` files of braid resources, the same documents users
//! `kubectl apply`. It is polled; a file that does not parse is reported and its previous
//! contents stay in force, so a half-written edit never takes rules away. Files and
//! directories whose names start with `.` are ignored (the operator writes status there).
//!
//! With a state directory ([`DirSource::with_state_dir`], the status directory) it also
//! reads back what the leader wrote, as the Kubernetes source does: each
//! EncryptionPolicy's rollout progress from its status file, and generations numbered in
//! a file every replica shares.

pub mod registry_file;
pub mod registry_items;
pub mod resources;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use imbl::ordmap::DiffItem;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Source, SourceError};
use crate::off_runtime::off_runtime;
use crate::registry::{Noticed, Snapshot};
use braid_api::invalid::InvalidInput;

use crate::registry::enforced::recorded_enforcing;
use crate::registry::progress::recorded_progress;
use registry_file::Resolved;
use resources::{Doc, Generations};

/// Reads a directory of YAML files.
pub struct DirSource {
    dir: PathBuf,
    interval: Duration,
    state_dir: Option<PathBuf>,
    state: State,
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

#[derive(Default)]
struct State {
    fingerprint: Fingerprint,
    status_fingerprint: Fingerprint,
    registry: Option<Arc<Resolved>>,
    registry_entries: registry_items::EntryCache,
    /// Whether `registry_entries` are the entries `registry` was resolved from (not
    /// those of a later edit that was refused).
    registry_parsed: bool,
    /// How often the registry was resolved whole (tests: edits of workloads are not).
    whole_resolves: usize,
    files: BTreeMap<PathBuf, Vec<Doc>>,
    generations: Generations,
    last: Option<Snapshot>,
}

/// The prefixes of the status files whose rollout progress is read back.
const POLICY_STATUS_PREFIXES: [&str; 2] = ["encryptionpolicy.", "accesspolicy."];
/// The file generations are numbered in, in the state directory.
pub const GENERATIONS_FILE: &str = "generations.json";

impl DirSource {
    /// Watches `dir`, checking it every `interval`.
    pub fn new(dir: PathBuf, interval: Duration) -> Self {
        Self {
            dir,
            interval,
            state_dir: None,
            state: State::default(),
        }
    }

    /// Reads back rollout progress from the status files in `state_dir` and numbers
    /// generations in a file there, shared with every replica on the same directory.
    pub fn with_state_dir(mut self, state_dir: PathBuf) -> Self {
        self.state.generations = Generations::kept_in(state_dir.join(GENERATIONS_FILE));
        self.state_dir = Some(state_dir);
        self
    }

    /// The rollout progress each EncryptionPolicy of `snapshot` has in its status file,
    /// and the AccessPolicies whose status records their rollout enforcing them.
    fn recorded(
        &self,
        snapshot: &Snapshot,
    ) -> (crate::registry::Rollouts, crate::registry::Enforced) {
        let mut out = crate::registry::Rollouts::new();
        let mut enforced = crate::registry::Enforced::new();
        for (path, _, _) in &self.state.status_fingerprint {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let Ok(doc) = serde_norway::from_str::<serde_json::Value>(&text) else {
                tracing::warn!(file = %path.display(), "status file does not parse; its rollout progress is not read");
                continue;
            };
            let meta = &doc["metadata"];
            let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
                continue;
            };
            let key = crate::registry::ObjectKey::new(ns, name);
            match doc["kind"].as_str() {
                Some("AccessPolicy") => {
                    let Some(policy) = snapshot.access_policies.get(&key) else {
                        continue;
                    };
                    let spec = policy.accepted.as_deref().map(|p| &p.spec);
                    if recorded_enforcing(policy.generation, spec, &doc["status"]) == Some(true) {
                        enforced.insert(key);
                    }
                }
                _ => {
                    let Some(policy) = snapshot.encryption_policies.get(&key) else {
                        continue;
                    };
                    let spec = policy.accepted.as_deref().map(|p| &p.spec);
                    if let Some(p) = recorded_progress(policy.generation, spec, &doc["status"]) {
                        out.insert(key, p);
                    }
                }
            }
        }
        (out, enforced)
    }

    /// Reads the directory if anything in it changed; returns the new snapshot then.
    /// Problems are logged; what they concern keeps its last good contents.
    pub fn reload(&mut self) -> Result<Option<Snapshot>, SourceError> {
        let fingerprint = fingerprint(&self.dir).map_err(|e| SourceError::Dir {
            path: self.dir.display().to_string(),
            message: format!("cannot list it: {e}"),
        })?;
        let status_fingerprint = match &self.state_dir {
            Some(dir) => status_fingerprint(dir),
            None => Vec::new(),
        };
        let files_same = fingerprint == self.state.fingerprint && self.state.registry.is_some();
        let status_same = status_fingerprint == self.state.status_fingerprint;
        if files_same && status_same {
            return Ok(None);
        }
        self.state.status_fingerprint = status_fingerprint;
        if files_same && let Some(last) = &self.state.last {
            // Only a status changed: what was read stands, with the progress read again.
            let mut snapshot = last.clone();
            (snapshot.rollout_status, snapshot.access_enforced) = self.recorded(&snapshot);
            self.state.last = Some(snapshot.clone());
            return Ok(Some(snapshot));
        }
        let before = std::mem::replace(&mut self.state.fingerprint, fingerprint);
        let mut present = Vec::new();
        for stamp in &self.state.fingerprint {
            let path = &stamp.0;
            // A file as it was is not read again: its resources keep their `Arc`s, which
            // the compiler tells unchanged by (re-reading every route on each registry
            // write made every service and workload look changed).
            let is_registry = path
                .file_name()
                .is_some_and(|n| n == registry_file::FILE_NAME);
            let have = if is_registry {
                self.state.registry.is_some()
            } else {
                self.state.files.contains_key(path)
            };
            if have && before.binary_search(stamp).is_ok() {
                present.push(path.clone());
                continue;
            }
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read; keeping its last good contents");
                    present.push(path.clone());
                    continue;
                }
            };
            present.push(path.clone());
            if is_registry {
                // Workloads added, removed or edited (the usual change): only the
                // services selecting them are resolved again.
                let quick = match &self.state.registry {
                    Some(before) if self.state.registry_parsed => {
                        registry_items::workload_changes(&text, &mut self.state.registry_entries)
                            .and_then(|c| {
                                registry_file::with_workloads_changed(
                                    before,
                                    self.state.registry_entries.services(),
                                    c.removed,
                                    c.added,
                                )
                            })
                    }
                    _ => None,
                };
                if let Some(resolved) = quick {
                    self.state.registry = Some(Arc::new(resolved));
                    continue;
                }
                self.state.whole_resolves += 1;
                let resolved = registry_items::parse(&text, &mut self.state.registry_entries)
                    .map_err(|e| vec![e])
                    .and_then(|f| {
                        f.resolve()
                            .map_err(|errors| errors.into_iter().map(InvalidInput::from).collect())
                    });
                // The entries parsed are those of the registry in force only if it was.
                self.state.registry_parsed = resolved.is_ok();
                match resolved {
                    Ok(mut resolved) => {
                        if let Some(before) = &self.state.registry {
                            share_unchanged(before, &mut resolved);
                        }
                        self.state.registry = Some(Arc::new(resolved));
                    }
                    Err(errors) => {
                        // Nothing good yet: start empty, so the error is logged once
                        // rather than on every poll until the file changes.
                        if self.state.registry.is_none() {
                            self.state.registry = Some(Arc::new(Default::default()));
                        }
                        for e in errors {
                            tracing::error!(file = %path.display(), error = %e, "registry refused; keeping its last good contents");
                        }
                    }
                }
            } else {
                match resources::parse_file(&text) {
                    Ok(docs) => {
                        self.state.files.insert(path.clone(), docs);
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "file refused; keeping its last good contents")
                    }
                }
            }
        }
        // A deleted file takes its resources with it.
        self.state.files.retain(|p, _| present.contains(p));
        if !present
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == registry_file::FILE_NAME))
        {
            self.state.registry = Some(Arc::new(Default::default()));
            self.state.registry_parsed = false;
        }
        let mut snapshot = Snapshot::default();
        if let Some(reg) = &self.state.registry {
            snapshot.services = reg.0.clone();
            snapshot.workloads = reg.1.clone();
        }
        let docs: Vec<Doc> = self.state.files.values().flatten().cloned().collect();
        for e in self.state.generations.insert_all(&docs, &mut snapshot) {
            tracing::error!(dir = %self.dir.display(), error = %e, "resource not numbered as expected");
        }
        (snapshot.rollout_status, snapshot.access_enforced) = self.recorded(&snapshot);
        self.state.last = Some(snapshot.clone());
        Ok(Some(snapshot))
    }
}

/// Hands over the objects `resolved` has unchanged from `before` as the same `Arc`s, as
/// the Kubernetes source's watch does: the compiler tells what changed by pointer. The
/// maps are `before`'s with the changes made, so they share its structure too.
fn share_unchanged(before: &Resolved, resolved: &mut Resolved) {
    fn share<V: PartialEq + Clone>(
        before: &imbl::OrdMap<crate::registry::ObjectKey, V>,
        now: &mut imbl::OrdMap<crate::registry::ObjectKey, V>,
    ) {
        let mut out = before.clone();
        for change in before.diff(now) {
            match change {
                DiffItem::Add(k, v) | DiffItem::Update { new: (k, v), .. } => {
                    out.insert(k.clone(), v.clone());
                }
                DiffItem::Remove(k, _) => {
                    out.remove(k);
                }
            }
        }
        *now = out;
    }
    share(&before.0, &mut resolved.0);
    share(&before.1, &mut resolved.1);
}

/// The EncryptionPolicy and AccessPolicy status files of `dir` (none when it does not
/// exist yet).
fn status_fingerprint(dir: &Path) -> Fingerprint {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Fingerprint = entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let progress = POLICY_STATUS_PREFIXES.iter().any(|p| name.starts_with(p));
            if !progress || !name.ends_with(".yaml") {
                return None;
            }
            let meta = std::fs::metadata(&path).ok()?;
            // The sink replaces a status file by renaming a new one over it: a new inode,
            // even when time and size look the same (10 % → 25 %).
            let stamp = (meta.ino() << 32) ^ meta.len();
            Some((path, meta.modified().ok(), stamp))
        })
        .collect();
    out.sort();
    out
}

/// The YAML files of `dir` with their modification times and sizes, sorted by path.
fn fingerprint(dir: &Path) -> std::io::Result<Vec<(PathBuf, Option<SystemTime>, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        // Follow symlinks (ConfigMap mounts swap one); a vanished file is skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            out.push((path, meta.modified().ok(), meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

impl Source for DirSource {
    async fn run(
        mut self,
        out: watch::Sender<Arc<Snapshot>>,
        stop: CancellationToken,
    ) -> Result<(), SourceError> {
        if !self.dir.is_dir() {
            return Err(SourceError::Dir {
                path: self.dir.display().to_string(),
                message: "not a directory: create it, or point --source at one".into(),
            });
        }
        let mut first = true;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let noticed = Noticed::now();
            // Comparing with the last snapshot and dropping it cost as much as reading:
            // all of it off the workers.
            let reloaded = off_runtime(|| {
                let mut snapshot = self.reload()?;
                if let Some(s) = &mut snapshot {
                    s.noticed = noticed;
                }
                // The first snapshot is always announced: it marks the source synced.
                Ok::<_, SourceError>(snapshot.map(|snapshot| {
                    // Compared under a read lock, which holds up no reader.
                    let same = !std::mem::take(&mut first) && **out.borrow() == snapshot;
                    if !same {
                        drop(out.send_replace(Arc::new(snapshot)));
                    }
                }))
            });
            if let Err(e) = reloaded {
                tracing::error!(error = %e, "directory source");
            }
        }
    }
}

/// A snapshot of `registry` (a `registry.yaml`) and `resources` (braid resource YAML), as
/// this source would publish it: for tests that write their cluster as YAML.
#[cfg(test)]
pub fn snapshot_of(registry: &str, resources: &str) -> Snapshot {
    #![allow(clippy::unwrap_used)]
    let (services, workloads) = registry_file::parse(registry).unwrap().resolve().unwrap();
    let mut snap = Snapshot {
        services,
        workloads,
        ..Default::default()
    };
    resources::Generations::default()
        .insert_all(&resources::parse_file(resources).unwrap(), &mut snap);
    snap
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::Progress;
    use crate::registry::{Kind, ObjectKey};
    use crate::sink::{FileSink, StatusSink, StatusUpdate};

    const REGISTRY: &str = "services: []\nworkloads: []\n";
    const POLICY: &str = "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: pay, namespace: shop}\nspec: {mode: Permissive, rollout: {percent: 0, auto: {steps: [50, 100], interval: 10s, enforceStrict: true}}}\n";

    #[tokio::test]
    async fn the_leaders_status_is_read_back_like_the_api_servers() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".status");
        std::fs::write(dir.path().join("registry.yaml"), REGISTRY).unwrap();
        std::fs::write(dir.path().join("tls.yaml"), POLICY).unwrap();
        let mut source = DirSource::new(dir.path().into(), Duration::from_millis(10))
            .with_state_dir(state.clone());
        let first = source.reload().unwrap().unwrap();
        assert!(first.rollout_status.is_empty());
        let key = ObjectKey::new("shop", "pay");
        let generation = first.encryption_policies[&key].generation;
        assert_eq!(generation, Some(1));
        // The leader writes Strict (the same sink the operator writes with).
        let sink = FileSink::new(state.clone());
        let status = |g: i64| StatusUpdate {
            kind: Kind::EncryptionPolicy,
            key: key.clone(),
            status: serde_json::json!({"observedGeneration": g, "phase": "Strict", "currentPercent": 100}),
        };
        sink.apply(&status(1)).await.unwrap();
        let strict = Some(&Progress {
            percent: 100,
            strict: true,
        });
        assert_eq!(
            source.reload().unwrap().unwrap().rollout_status.get(&key),
            strict
        );
        // A restarted (or another) replica on the same directory reads it too.
        let mut restarted = DirSource::new(dir.path().into(), Duration::from_millis(10))
            .with_state_dir(state.clone());
        let again = restarted.reload().unwrap().unwrap();
        assert_eq!(again.encryption_policies[&key].generation, Some(1));
        assert_eq!(again.rollout_status.get(&key), strict);
        // A status for another spec says nothing.
        sink.apply(&status(7)).await.unwrap();
        assert!(source.reload().unwrap().unwrap().rollout_status.is_empty());
    }

    #[test]
    fn edits_of_workloads_resolve_as_the_whole_file_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.yaml");
        const SERVICES: &str = "services:\n- {name: pay, namespace: shop, vips: [10.96.0.1], selector: {app: pay}, ports: [{port: 80}]}\n- {name: v6, namespace: shop, vips: [\"fd96::1\"], selector: {app: pay}, ports: [{port: 80}]}\n- {name: web, namespace: shop, vips: [10.96.0.2], selector: {app: web, tier: front}, ports: [{port: 80}]}\n- {name: none, namespace: shop, vips: [10.96.0.3], ports: [{port: 80}]}\n";
        let w = |name: &str, ns: &str, ips: &str, labels: &str| {
            format!("- {{name: {name}, namespace: {ns}, ips: [{ips}], labels: {labels}}}\n")
        };
        let pay0 = w("pay-0", "shop", "10.0.0.1, \"fd00::1\"", "{app: pay}");
        let web0 = w("web-0", "shop", "10.0.0.2", "{app: web, tier: front}");
        let pay1 = w("pay-1", "shop", "10.0.0.3", "{app: pay}");
        let pay0_web = w("pay-0", "shop", "10.0.0.1", "{app: web, tier: front}");
        let other = w("pay-2", "other", "10.0.0.4", "{app: pay}");
        let twice = w("pay-3", "shop", "10.0.0.1", "{app: pay}");
        let fixed = w("pay-3", "shop", "10.0.0.9", "{app: pay}");
        // (workloads, valid, resolved whole)
        let steps: Vec<(Vec<&String>, bool, bool)> = vec![
            (vec![&pay0, &web0], true, true),
            (vec![&pay0, &web0, &pay1], true, false),
            (vec![&pay1, &web0, &pay0], true, false),
            (vec![&pay0_web, &web0, &pay1], true, false),
            (vec![&pay0_web, &pay1], true, false),
            (vec![&pay0_web, &pay1, &other], true, false),
            (vec![&pay0_web, &pay1, &other, &twice], false, true),
            (vec![&pay0_web, &pay1, &other, &fixed], true, true),
            (vec![&pay1, &other, &fixed], true, false),
        ];
        let mut source = DirSource::new(dir.path().into(), Duration::from_millis(10));
        let mut good = Snapshot::default();
        for (n, (workloads, valid, whole)) in steps.into_iter().enumerate() {
            // A first line of its own length: the file's size says it changed.
            let text = format!("#{}\n{SERVICES}workloads:\n", "-".repeat(n))
                + &workloads.into_iter().cloned().collect::<String>();
            std::fs::write(&path, &text).unwrap();
            let before = source.state.whole_resolves;
            let got = source.reload().unwrap().unwrap();
            if valid {
                good = snapshot_of(&text, "");
            }
            assert_eq!(got.services, good.services, "step {n}");
            assert_eq!(got.workloads, good.workloads, "step {n}");
            assert_eq!(source.state.whole_resolves > before, whole, "step {n}");
        }
        let pay = &good.services[&ObjectKey::new("shop", "pay")];
        let eps: Vec<String> = pay.endpoints.iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(eps, ["10.0.0.3", "10.0.0.9"]);
    }

    #[test]
    fn what_a_registry_edit_leaves_alone_is_handed_over_as_the_same_objects() {
        let dir = tempfile::tempdir().unwrap();
        let registry = |zone: &str| {
            format!(
                "services:\n- {{name: pay, namespace: shop, vips: [10.96.0.1], selector: {{app: pay}}, ports: [{{port: 80}}]}}\n- {{name: web, namespace: shop, vips: [10.96.0.2], selector: {{app: web}}, ports: [{{port: 80}}]}}\nworkloads:\n- {{name: pay-0, namespace: shop, ips: [10.0.0.1], labels: {{app: pay, zone: {zone}}}}}\n- {{name: web-0, namespace: shop, ips: [10.0.0.2], labels: {{app: web}}}}\n"
            )
        };
        let path = dir.path().join("registry.yaml");
        std::fs::write(&path, registry("a")).unwrap();
        let route = "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: pay, namespace: shop}\nspec: {host: pay, groups: [{name: all, labels: {app: pay}}], rules: [{name: all, route: [{group: all, weight: 100}]}]}\n";
        std::fs::write(dir.path().join("routes.yaml"), route).unwrap();
        let mut source = DirSource::new(dir.path().into(), Duration::from_millis(10));
        let first = source.reload().unwrap().unwrap();
        // A longer value: the file's size changes, so the edit is seen at once.
        std::fs::write(&path, registry("bb")).unwrap();
        let second = source.reload().unwrap().unwrap();
        let (pay, web) = (
            ObjectKey::new("shop", "pay-0"),
            ObjectKey::new("shop", "web-0"),
        );
        assert!(!Arc::ptr_eq(
            &first.workloads[&pay],
            &second.workloads[&pay]
        ));
        assert_eq!(second.workloads[&pay].labels["zone"], "bb");
        assert!(Arc::ptr_eq(&first.workloads[&web], &second.workloads[&web]));
        for svc in ["pay", "web"] {
            let key = ObjectKey::new("shop", svc);
            assert!(
                Arc::ptr_eq(&first.services[&key], &second.services[&key]),
                "{svc}"
            );
        }
        // A file not written is not read again: its resources are the same objects.
        let key = ObjectKey::new("shop", "pay");
        let in_force = |s: &Snapshot| s.traffic_routes[&key].accepted.clone().unwrap();
        assert!(Arc::ptr_eq(&in_force(&first), &in_force(&second)));
    }
}
