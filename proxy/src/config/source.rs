//! Where config comes from, and the store every connection reads it from.
//!
//! A source (the file watcher here, the operator's stream in `control`) hands each new
//! `ProxyConfig` to [`ConfigSource::apply`], which compiles it into [`Tables`] and swaps
//! them in atomically. A config that does not load or compile is refused with a log line
//! naming the error, and the last good one stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::{ProxyConfig, Tables};

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a valid ProxyConfig.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A config from the operator's stream is not a valid ProxyConfig.
    #[error("parsing config: {0}")]
    Decode(String),
    /// The config contradicts itself.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Reads a ProxyConfig from a YAML or JSON file.
pub fn load_file(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses the text of a config file (YAML, or JSON, which is YAML too). It goes through
/// a JSON value so the file and the operator's JSON stream share one shape, and errors
/// name the field (`listeners[0].bind: invalid socket address`).
fn parse(path: &Path, text: &str) -> Result<ProxyConfig, ConfigError> {
    let err = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    let value: serde_json::Value = serde_norway::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut unknown = Vec::new();
    let config = deserialize_named(value, &mut unknown).map_err(err)?;
    match unknown.first() {
        None => Ok(config),
        Some(path) => Err(err(format!(
            "{path}: unknown field; check its spelling (every unknown field: {})",
            unknown.join(", ")
        ))),
    }
}

/// Parses one line of the operator's stream: a ProxyConfig as JSON, read straight from
/// the bytes (a large mesh's config is megabytes; no intermediate value). Errors name the
/// field, as for files.
pub fn parse_json(json: &[u8]) -> Result<ProxyConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut unknown = Vec::new();
    let config = deserialize_named(&mut de, &mut unknown).map_err(ConfigError::Decode)?;
    de.end().map_err(|e| ConfigError::Decode(e.to_string()))?;
    if !unknown.is_empty() {
        // A newer operator: what this proxy does not know, it cannot apply, but the rest
        // of the config is good.
        tracing::warn!(fields = %unknown.join(", "), version = %config.version, "config has fields this proxy does not know; ignoring them (upgrade the proxy)");
    }
    Ok(config)
}

/// Deserializes a ProxyConfig; an error says at which field (`listeners[0].bind: …`).
/// The paths of fields it does not know are pushed onto `unknown`.
fn deserialize_named<'de, D>(de: D, unknown: &mut Vec<String>) -> Result<ProxyConfig, String>
where
    D: serde::Deserializer<'de>,
{
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(de, &mut note);
    serde_path_to_error::deserialize(de).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// The current routing tables, shared by every listener, plus whether any config has
/// been applied yet (the proxy is not ready before).
pub struct ConfigSource {
    current: ArcSwap<Tables>,
    loaded: std::sync::atomic::AtomicBool,
    on_apply: Box<dyn Fn(&Tables) + Send + Sync>,
}

impl ConfigSource {
    /// A store holding an empty config; `on_apply` runs after each successful swap
    /// (metrics, listener reconciliation).
    pub fn new(on_apply: impl Fn(&Tables) + Send + Sync + 'static) -> Result<Self, ConfigError> {
        Ok(Self {
            current: ArcSwap::from_pointee(Tables::build(ProxyConfig::default())?),
            loaded: std::sync::atomic::AtomicBool::new(false),
            on_apply: Box::new(on_apply),
        })
    }

    /// The tables in force now. Cheap: one atomic load.
    pub fn tables(&self) -> Arc<Tables> {
        self.current.load_full()
    }

    /// Runs `f` on the tables in force without taking a reference count (the per-request
    /// path).
    pub fn with_tables<R>(&self, f: impl FnOnce(&Tables) -> R) -> R {
        f(&self.current.load())
    }

    /// Whether a config has been applied.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Compiles `config` and swaps it in; on error nothing changes.
    pub fn apply(&self, config: ProxyConfig) -> Result<(), ConfigError> {
        let tables = Tables::build_after(config, Some(&self.current.load()))?;
        tracing::info!(version = %tables.config.version, services = tables.config.services.len(), "config applied");
        let tables = Arc::new(tables);
        // In force first, then announced: whoever is told reads the new tables.
        self.current.store(tables.clone());
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        (self.on_apply)(&tables);
        Ok(())
    }
}

/// Watches a config file and applies each new version.
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
}

impl FileSource {
    /// Watches `path`, checking every `interval`. Polling (rather than inotify) also sees
    /// Kubernetes ConfigMap updates, which swap a symlink.
    pub fn new(path: PathBuf, interval: Duration) -> Self {
        Self { path, interval }
    }

    /// Loads the file once; the proxy refuses to start on a bad initial config.
    pub fn load_initial(&self, store: &ConfigSource) -> Result<String, ConfigError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| ConfigError::Read {
            path: self.path.clone(),
            source,
        })?;
        store.apply(parse(&self.path, &text)?)?;
        Ok(text)
    }

    /// Applies every change until `stop` fires. Bad versions are logged and skipped.
    pub async fn watch(self, store: Arc<ConfigSource>, mut last: String, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(text) = tokio::fs::read_to_string(&self.path).await else {
                continue; // a file being replaced may be briefly absent
            };
            if text == last {
                continue;
            }
            last = text;
            match parse(&self.path, &last).and_then(|cfg| store.apply(cfg)) {
                Ok(()) => {}
                Err(e) => tracing::error!(error = %e, "config refused; keeping the last good one"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_lines_parse_and_errors_name_the_field() {
        let config = parse_json(br#"{"version":"abc","listeners":[]}"#).unwrap();
        assert_eq!(config.version, "abc");

        let err = parse_json(br#"{"version":"abc","listeners":[{"name":"x","bind":"nope","target":{"address":"127.0.0.1:1"}}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("parsing config: listeners[0].bind: "),
            "{err}"
        );

        let err = parse_json(br#"{"version":"abc"} {}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("trailing characters"), "{err}");
    }

    #[test]
    fn unknown_fields_fail_a_file_but_not_the_stream() {
        // A typo in a hand-written file is an error naming it...
        let err = parse(
            Path::new("c.yaml"),
            "version: v1
listeners: []
services:
- {name: a, vip: [10.0.0.1]}
",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("services.0.vip: unknown field"), "{err}");
        // ...while a newer operator's extra field leaves the rest of the config usable.
        let config = parse_json(
            br#"{"version":"v2","tls":{"mode":"new"},"services":[{"name":"a","retryBudget":{}}]}"#,
        )
        .unwrap();
        assert_eq!(config.version, "v2");
        assert_eq!(config.services[0].name, "a");
    }
}
