//! Directory mode: resources are the YAML documents of the operator's directory, their
//! statuses the files the leader writes under `.status/`
//! (`<kind>.<namespace>.<name>.yaml`), the operator replicas are the admin addresses
//! given, and a proxy is reached on its admin port where braidctl runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Admin, KINDS, MetricsSource, Resource};

/// A mesh run from a directory.
pub struct DirMesh {
    dir: PathBuf,
    status_dir: PathBuf,
    operators: Vec<SocketAddr>,
    proxy_admin: SocketAddr,
}

impl DirMesh {
    /// The mesh of `dir`, its statuses in `status_dir` (default `<dir>/.status`).
    pub fn new(
        dir: PathBuf,
        status_dir: Option<PathBuf>,
        operators: Vec<SocketAddr>,
        proxy_admin: SocketAddr,
    ) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            anyhow::bail!(
                "--dir {}: not a directory (give the operator's --source dir:PATH)",
                dir.display()
            );
        }
        Ok(Self {
            status_dir: status_dir.unwrap_or_else(|| dir.join(".status")),
            dir,
            operators,
            proxy_admin,
        })
    }

    /// The operator replicas' admin addresses.
    pub fn operators(&self) -> anyhow::Result<Vec<SocketAddr>> {
        if self.operators.is_empty() {
            anyhow::bail!(
                "--operator: give the admin address (--admin-addr) of each operator replica, e.g. --operator 127.0.0.1:9090"
            );
        }
        Ok(self.operators.clone())
    }

    /// Where the proxy's admin port is.
    pub fn proxy_admin(&self) -> SocketAddr {
        self.proxy_admin
    }

    /// Every resource in the directory with its status file, if the leader wrote one.
    pub fn resources(&self, namespace: Option<&str>) -> anyhow::Result<Vec<Resource>> {
        let mut found: BTreeMap<(String, String, String), Resource> = BTreeMap::new();
        for path in yaml_files(&self.dir)? {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            // A file the operator refuses (half-written, not YAML) is the operator's to
            // report; here it just shows nothing.
            for doc in documents(&text) {
                let Some((kind, ns, name)) = identify(&doc) else {
                    continue;
                };
                if namespace.is_some_and(|n| n != ns) {
                    continue;
                }
                let status = self.status_of(&kind, &ns, &name)?;
                found.insert(
                    (ns.clone(), kind.clone(), name.clone()),
                    Resource {
                        kind,
                        namespace: ns,
                        name,
                        status,
                    },
                );
            }
        }
        Ok(found.into_values().collect())
    }

    fn status_of(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let path = self
            .status_dir
            .join(braid_api::debug::status_file_name(kind, namespace, name));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let doc: serde_json::Value = serde_norway::from_str(&text).with_context(|| {
            format!(
                "{}: not the status file the operator writes",
                path.display()
            )
        })?;
        Ok(doc.get("status").cloned())
    }

    /// The meshed workloads of `registry.yaml`, at their first address's health port.
    pub fn metrics_sources(&self) -> anyhow::Result<Vec<MetricsSource>> {
        let path = self.dir.join("registry.yaml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (the workloads and their addresses)",
                path.display()
            )
        })?;
        let registry: serde_json::Value = serde_norway::from_str(&text)
            .with_context(|| format!("{}: not the operator's registry", path.display()))?;
        let mut sources = Vec::new();
        for w in registry["workloads"].as_array().into_iter().flatten() {
            if w["meshed"] == false {
                continue;
            }
            let (Some(name), Some(ip)) = (w["name"].as_str(), w["ips"][0].as_str()) else {
                continue;
            };
            let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
                continue;
            };
            let ns = w["namespace"].as_str().unwrap_or("default");
            sources.push(MetricsSource {
                pod: format!("{ns}/{name}"),
                owner: w["labels"]["app"].as_str().unwrap_or(name).to_owned(),
                admin: Admin::Addr(SocketAddr::new(ip, braid_api::ports::HEALTH_PORT)),
            });
        }
        Ok(sources)
    }
}

/// The YAML files of `dir` (not those whose names start with `.`), sorted.
fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The documents of a multi-document YAML text that parse.
fn documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .filter_map(|d| serde_json::Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// A braid resource's kind, namespace and name (`default` when it names none, as the
/// operator reads it).
fn identify(doc: &serde_json::Value) -> Option<(String, String, String)> {
    let kind = doc.get("kind")?.as_str()?;
    if !KINDS.iter().any(|(k, _)| *k == kind) {
        return None;
    }
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str().filter(|n| !n.is_empty())?;
    let ns = meta
        .get("namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default");
    Some((kind.to_owned(), ns.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_come_with_their_status_files_and_others_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("routes.yaml"),
            "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: r, namespace: shop}\nspec: {}\n\
             ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n\
             ---\napiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {name: h}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("registry.yaml"), "services: []\n").unwrap();
        std::fs::create_dir(dir.path().join(".status")).unwrap();
        std::fs::write(
            dir.path().join(".status/trafficroute.shop.r.yaml"),
            "kind: TrafficRoute\nmetadata: {namespace: shop, name: r}\nstatus: {ruleCount: 2}\n",
        )
        .unwrap();
        let mesh = DirMesh::new(
            dir.path().to_owned(),
            None,
            vec![],
            "127.0.0.1:15000".parse().unwrap(),
        )
        .unwrap();
        let all = mesh.resources(None).unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|r| format!("{}/{}/{}", r.namespace, r.kind, r.name))
            .collect();
        assert_eq!(names, ["default/SelfHealing/h", "shop/TrafficRoute/r"]);
        assert_eq!(all[1].status.as_ref().unwrap()["ruleCount"], 2);
        assert!(all[0].status.is_none());
        assert_eq!(mesh.resources(Some("shop")).unwrap().len(), 1);
        let err = mesh.operators().unwrap_err().to_string();
        assert!(err.starts_with("--operator: "), "{err}");
    }
}
