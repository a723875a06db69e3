//! The directory source (`--source dir:PATH`): a mesh without Kubernetes.
//!
//! The directory holds `registry.yaml` (services and workloads, see [`registry_file`])
//! and any number of `*.yaml`/`*.yml` files of braid resources, the same documents users
//! `kubectl apply`. It is polled; a file that does not parse is reported and its previous
//! contents stay in force, so a half-written edit never takes rules away. Files and
//! directories whose names start with `.` are ignored (the operator writes status there).

pub mod registry_file;
pub mod resources;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Source, SourceError};
use crate::registry::Snapshot;
use registry_file::Resolved;
use resources::{Doc, Generations};

/// Reads a directory of YAML files.
pub struct DirSource {
    dir: PathBuf,
    interval: Duration,
    state: State,
}

#[derive(Default)]
struct State {
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
    registry: Option<Arc<Resolved>>,
    files: BTreeMap<PathBuf, Vec<Doc>>,
    generations: Generations,
}

impl DirSource {
    /// Watches `dir`, checking it every `interval`.
    pub fn new(dir: PathBuf, interval: Duration) -> Self {
        Self {
            dir,
            interval,
            state: State::default(),
        }
    }

    /// Reads the directory if anything in it changed; returns the new snapshot then.
    /// Problems are logged; what they concern keeps its last good contents.
    pub fn reload(&mut self) -> Result<Option<Snapshot>, SourceError> {
        let fingerprint = fingerprint(&self.dir).map_err(|e| SourceError::Dir {
            path: self.dir.display().to_string(),
            message: format!("cannot list it: {e}"),
        })?;
        if fingerprint == self.state.fingerprint && self.state.registry.is_some() {
            return Ok(None);
        }
        self.state.fingerprint = fingerprint;
        let mut present = Vec::new();
        for (path, _, _) in &self.state.fingerprint {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read; keeping its last good contents");
                    present.push(path.clone());
                    continue;
                }
            };
            present.push(path.clone());
            if path
                .file_name()
                .is_some_and(|n| n == registry_file::FILE_NAME)
            {
                match registry_file::parse(&text)
                    .map_err(|e| vec![e])
                    .and_then(|f| f.resolve())
                {
                    Ok(resolved) => self.state.registry = Some(Arc::new(resolved)),
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
        }
        let mut snapshot = Snapshot::default();
        if let Some(reg) = &self.state.registry {
            snapshot.services = reg.0.clone();
            snapshot.workloads = reg.1.clone();
        }
        let docs: Vec<Doc> = self.state.files.values().flatten().cloned().collect();
        for e in self.state.generations.insert_all(&docs, &mut snapshot) {
            tracing::error!(dir = %self.dir.display(), error = %e, "duplicate resource");
        }
        Ok(Some(snapshot))
    }
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
            match self.reload() {
                Ok(Some(snapshot)) => {
                    // The first snapshot is always announced: it marks the source synced.
                    out.send_if_modified(|cur| {
                        if !std::mem::take(&mut first) && **cur == snapshot {
                            false
                        } else {
                            *cur = Arc::new(snapshot);
                            true
                        }
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "directory source"),
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
