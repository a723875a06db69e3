//! braid resources from YAML files: the same documents users `kubectl apply`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use braid_api::invalid::InvalidField;
use braid_crds::decode::Resource;
use braid_crds::{AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute, ValidationErrors};

use crate::registry::{Kind, ObjectKey, Snapshot};

/// One document of a resource file, decoded as far as it goes.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace and name.
    pub key: ObjectKey,
    /// Its spec, as JSON text (the directory source bumps the generation when it changes).
    pub spec_text: String,
    /// The decoded resource, or what is wrong with it.
    pub decoded: Decoded,
}

/// A decoded document of one of the four kinds.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// A TrafficRoute.
    TrafficRoute(Result<Arc<TrafficRoute>, ValidationErrors>),
    /// An EncryptionPolicy.
    EncryptionPolicy(Result<Arc<EncryptionPolicy>, ValidationErrors>),
    /// A SelfHealing.
    SelfHealing(Result<Arc<SelfHealing>, ValidationErrors>),
    /// An AccessPolicy.
    AccessPolicy(Result<Arc<AccessPolicy>, ValidationErrors>),
}

/// A resource file refused: which document, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("document {document}: {problem}")]
pub struct FileError {
    /// The document's number in the file, from 1.
    pub document: usize,
    /// What is wrong with it.
    pub problem: DocError,
}

/// What is wrong with one document of a resource file.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// It is not YAML.
    #[error("{0}")]
    Syntax(#[from] serde_norway::Error),
    /// It is not a braid resource.
    #[error(
        "apiVersion {found:?}: only {expected} resources belong here (services and workloads go in registry.yaml)"
    )]
    ApiVersion {
        /// What it says.
        found: String,
        /// braid's.
        expected: String,
    },
    /// Of braid's group, but not one of its kinds.
    #[error("kind {0:?}: expected TrafficRoute, EncryptionPolicy, SelfHealing or AccessPolicy")]
    Kind(String),
    /// Its name or another required field is missing.
    #[error(transparent)]
    Field(#[from] InvalidField),
}

/// Splits a file into documents and decodes each. A document that is not a braid resource
/// with a name (or not YAML at all) fails the whole file, so the file's previous contents
/// stay in force; a braid resource with an invalid spec is returned with its errors.
pub fn parse_file(text: &str) -> Result<Vec<Doc>, FileError> {
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let failed = |problem| FileError {
            document: i + 1,
            problem,
        };
        let value: serde_json::Value =
            serde::Deserialize::deserialize(de).map_err(|e| failed(DocError::Syntax(e)))?;
        if value.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        docs.push(parse_doc(&value).map_err(failed)?);
    }
    Ok(docs)
}

fn parse_doc(value: &serde_json::Value) -> Result<Doc, DocError> {
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let kind = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    let expected = format!("{}/{}", braid_crds::GROUP, braid_crds::VERSION);
    if api_version != expected {
        return Err(DocError::ApiVersion {
            found: api_version.to_string(),
            expected,
        });
    }
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|v| v.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| InvalidField::new("metadata.name", "required"))?;
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let key = ObjectKey::new(namespace, name);
    let spec_text = value.get("spec").map(|s| s.to_string()).unwrap_or_default();
    let decoded = match kind {
        "TrafficRoute" => Decoded::TrafficRoute(decode(value)),
        "EncryptionPolicy" => Decoded::EncryptionPolicy(decode(value)),
        "SelfHealing" => Decoded::SelfHealing(decode(value)),
        "AccessPolicy" => Decoded::AccessPolicy(decode(value)),
        other => return Err(DocError::Kind(other.to_string())),
    };
    let kind = match decoded {
        Decoded::TrafficRoute(_) => Kind::TrafficRoute,
        Decoded::EncryptionPolicy(_) => Kind::EncryptionPolicy,
        Decoded::SelfHealing(_) => Kind::SelfHealing,
        Decoded::AccessPolicy(_) => Kind::AccessPolicy,
    };
    Ok(Doc {
        kind,
        key,
        spec_text,
        decoded,
    })
}

fn decode<T: Resource>(value: &serde_json::Value) -> Result<Arc<T>, ValidationErrors> {
    braid_crds::decode::<T>(value).map(Arc::new)
}

/// What the directory source remembers about each resource across reloads: a
/// generation bumped when the spec changes, and when it was first seen. With a file
/// ([`Generations::kept_in`]) it is shared: every replica reading the same directory, and
/// every restart, numbers the same spec alike, so a status's `observedGeneration` (what
/// a rollout resumes from) means the same spec to all of them.
#[derive(Debug, Default)]
pub struct Generations {
    seen: BTreeMap<(Kind, ObjectKey), Record>,
    file: Option<PathBuf>,
}

/// One resource's numbering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// SHA-256 of the spec's JSON text.
    spec: String,
    generation: i64,
    created: String,
}

/// The shared file: one entry per resource.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    resources: Vec<KeptEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeptEntry {
    kind: String,
    namespace: String,
    name: String,
    #[serde(flatten)]
    record: Record,
}

fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Generations {
    /// Numbering kept in `file` (JSON), read and written under a lock on every reload.
    pub fn kept_in(file: PathBuf) -> Self {
        Self {
            seen: BTreeMap::new(),
            file: Some(file),
        }
    }

    /// Puts `docs` into `snapshot`, numbering generations like the API server does.
    /// The first document wins when two share a kind and key (reported by the caller).
    pub fn insert_all(&mut self, docs: &[Doc], snapshot: &mut Snapshot) -> Vec<String> {
        let mut errors = Vec::new();
        let file = self.file.clone();
        let lock = match &file {
            Some(file) => match self.load(file) {
                Ok(lock) => Some(lock),
                Err(e) => {
                    errors.push(format!(
                        "{}: {e}; numbering generations from memory",
                        file.display()
                    ));
                    None
                }
            },
            None => None,
        };
        let mut live = BTreeMap::new();
        for doc in docs {
            let id = (doc.kind, doc.key.clone());
            if live.contains_key(&id) {
                errors.push(format!(
                    "{} {} is defined twice; the first one counts",
                    doc.kind, doc.key
                ));
                continue;
            }
            let spec = digest(&doc.spec_text);
            let record = match self.seen.get(&id) {
                Some(r) if r.spec == spec => r.clone(),
                Some(r) => Record {
                    spec,
                    generation: r.generation + 1,
                    created: r.created.clone(),
                },
                None => Record {
                    spec,
                    generation: 1,
                    created: k8s_openapi::jiff::Timestamp::now().to_string(),
                },
            };
            let (g, c) = (Some(record.generation), Some(record.created.clone()));
            live.insert(id, record);
            let key = doc.key.clone();
            match &doc.decoded {
                Decoded::TrafficRoute(r) => {
                    snapshot.traffic_routes.insert(
                        key.clone(),
                        crate::registry::Observed::new(key, g, c, r.clone()),
                    );
                }
                Decoded::EncryptionPolicy(r) => {
                    snapshot.encryption_policies.insert(
                        key.clone(),
                        crate::registry::Observed::new(key, g, c, r.clone()),
                    );
                }
                Decoded::SelfHealing(r) => {
                    snapshot.self_healings.insert(
                        key.clone(),
                        crate::registry::Observed::new(key, g, c, r.clone()),
                    );
                }
                Decoded::AccessPolicy(r) => {
                    snapshot.access_policies.insert(
                        key.clone(),
                        crate::registry::Observed::new(key, g, c, r.clone()),
                    );
                }
            }
        }
        // Deleted resources are forgotten: re-created, they start over at generation 1.
        let changed = live != self.seen;
        self.seen = live;
        if let (Some(file), Some((lock, fresh))) = (&file, lock) {
            if (changed || fresh)
                && let Err(e) = self.store(file)
            {
                errors.push(format!("{}: {e}", file.display()));
            }
            drop(lock);
        }
        errors
    }

    /// Takes the file's lock and what it holds (other replicas' numbering wins over
    /// this one's memory).
    /// Also says whether the file must be written even if nothing changed (it is
    /// missing, or was unreadable).
    fn load(&mut self, file: &Path) -> std::io::Result<(std::fs::File, bool)> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(file.with_extension("lock"))?;
        lock.lock()?;
        match std::fs::read(file) {
            Ok(bytes) => {
                let Ok(kept) = serde_json::from_slice::<Kept>(&bytes) else {
                    // Unreadable (hand-edited, a disk fault): set aside and written anew
                    // from what this replica knows, rather than never shared again.
                    let aside = file.with_extension("json.unreadable");
                    tracing::error!(file = %file.display(), moved_to = %aside.display(), "generations file does not parse; numbering from memory and writing it anew");
                    let _ = std::fs::rename(file, &aside);
                    return Ok((lock, true));
                };
                self.seen = kept
                    .resources
                    .into_iter()
                    .filter_map(|e| {
                        let kind = Kind::parse(&e.kind)?;
                        Some(((kind, ObjectKey::new(e.namespace, e.name)), e.record))
                    })
                    .collect();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((lock, true)),
            Err(e) => return Err(e),
        }
        Ok((lock, false))
    }

    fn store(&self, file: &Path) -> std::io::Result<()> {
        let kept = Kept {
            resources: self
                .seen
                .iter()
                .map(|((kind, key), record)| KeptEntry {
                    kind: kind.as_str().into(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    record: record.clone(),
                })
                .collect(),
        };
        let text = serde_json::to_vec_pretty(&kept)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let tmp = file.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = r#"
apiVersion: braid.dev/v1alpha1
kind: TrafficRoute
metadata: {name: payments, namespace: shop}
spec:
  host: payments
  rules: [{name: all}]
"#;

    #[test]
    fn documents_decode_with_their_keys() {
        let docs = parse_file(&format!("{ROUTE}---\n")).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].key, ObjectKey::new("shop", "payments"));
        assert!(matches!(&docs[0].decoded, Decoded::TrafficRoute(Ok(_))));
    }

    #[test]
    fn an_invalid_spec_is_kept_with_its_errors() {
        let text = ROUTE.replace(
            "rules: [{name: all}]",
            "rules: [{name: all, timeout: soon}]",
        );
        let docs = parse_file(&text).unwrap();
        let Decoded::TrafficRoute(Err(errors)) = &docs[0].decoded else {
            panic!("{docs:?}")
        };
        assert!(
            errors
                .paths()
                .iter()
                .any(|p| p.starts_with("spec.rules[0].timeout")),
            "{errors:?}"
        );
    }

    #[test]
    fn foreign_documents_fail_the_file() {
        let err = parse_file("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry.yaml"), "{err}");
        let err = parse_file("apiVersion: braid.dev/v1alpha1\nkind: Route\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kind \"Route\""), "{err}");
    }

    #[test]
    fn a_refused_document_is_named_by_its_number_and_field() {
        let text = format!(
            "{ROUTE}---\napiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {{namespace: shop}}\n"
        );
        let err = parse_file(&text).unwrap_err();
        assert_eq!(err.document, 2);
        assert_eq!(err.to_string(), "document 2: metadata.name: required");
        let err = parse_file("a: [\n").unwrap_err();
        assert!(matches!(err.problem, DocError::Syntax(_)), "{err:?}");
    }

    #[test]
    fn generations_follow_spec_changes() {
        let mut gens = Generations::default();
        let mut snap = Snapshot::default();
        gens.insert_all(&parse_file(ROUTE).unwrap(), &mut snap);
        let key = ObjectKey::new("shop", "payments");
        assert_eq!(snap.traffic_routes[&key].generation, Some(1));
        let mut snap = Snapshot::default();
        gens.insert_all(&parse_file(ROUTE).unwrap(), &mut snap);
        assert_eq!(snap.traffic_routes[&key].generation, Some(1));
        let mut snap = Snapshot::default();
        let changed = ROUTE.replace("name: all", "name: every");
        gens.insert_all(&parse_file(&changed).unwrap(), &mut snap);
        assert_eq!(snap.traffic_routes[&key].generation, Some(2));
    }

    #[test]
    fn generations_kept_in_a_file_survive_restarts_and_agree_across_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("generations.json");
        let key = ObjectKey::new("shop", "payments");
        let changed = ROUTE.replace("name: all", "name: every");
        let mut a = Generations::kept_in(file.clone());
        let mut snap = Snapshot::default();
        a.insert_all(&parse_file(ROUTE).unwrap(), &mut snap);
        let first = snap.traffic_routes[&key].clone();
        let mut snap = Snapshot::default();
        assert!(
            a.insert_all(&parse_file(&changed).unwrap(), &mut snap)
                .is_empty()
        );
        assert_eq!(snap.traffic_routes[&key].generation, Some(2));
        // A replica (or a restart) that never saw the first spec numbers it the same.
        let mut b = Generations::kept_in(file);
        let mut later = Snapshot::default();
        b.insert_all(&parse_file(&changed).unwrap(), &mut later);
        assert_eq!(later.traffic_routes[&key].generation, Some(2));
        assert_eq!(later.traffic_routes[&key].created, first.created);
    }
}
