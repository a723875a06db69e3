//! Where config comes from, and the store every connection reads it from.
//!
//! A source (the file watcher here, the operator's stream in `control`) hands each new
//! `ProxyConfig` to [`TableStore::apply`], which compiles it into [`Tables`] and swaps
//! them in atomically. A config that does not load or compile is refused with a log line
//! naming the error, and the last good one stays in force.

mod yaml_depth;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::de::{self, DeserializeSeed, Visitor};
use tokio_util::sync::CancellationToken;

use super::Tables;
use crate::config::{InvalidField, ProxyConfig};
use braid_api::control::delta::{ConfigDelta, DeltaLine};

/// The largest config file read: 64 MiB. The operator's config for a pod that sees 5,000
/// services is about 9 MB, so this leaves room for a mesh several times that, while a
/// runaway or hostile file is refused before it is held in memory and parsed.
pub const MAX_CONFIG_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// How deeply a config file may nest mappings and lists. A ProxyConfig nests about a
/// dozen levels (routes are the deepest); the parsers' own limits are 128, but the YAML
/// scanner spends time proportional to the depth on every token before its limit applies.
pub const MAX_CONFIG_DEPTH: usize = 64;

/// How many values (scalars, lists, mappings) a config file may decode to per byte of
/// it. Written out, a value takes at least a byte; YAML aliases repeat what their anchor
/// holds, which lets a few kilobytes stand for gigabytes ("billion laughs": the YAML
/// parser bounds how many aliases it expands, not how much each one repeats). Sixteen
/// leaves room for anchors that reuse a block of routes many times.
pub const MAX_VALUES_PER_BYTE: usize = 16;

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
    /// The file is larger than [`MAX_CONFIG_FILE_BYTES`]; it was not parsed.
    #[error("reading {path}: larger than the limit of {limit} bytes (64 MiB); not parsed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// [`MAX_CONFIG_FILE_BYTES`].
        limit: u64,
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
    /// A field of the config cannot be used.
    #[error("invalid config: {0}")]
    Invalid(#[from] InvalidField),
}

/// Reads a ProxyConfig from a YAML or JSON file.
pub fn load_file(path: &Path) -> Result<ProxyConfig, ConfigError> {
    parse(path, &read_bounded(path)?)
}

/// Reads `path`, refusing it past [`MAX_CONFIG_FILE_BYTES`] (without reading further).
fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            limit: MAX_CONFIG_FILE_BYTES,
        });
    }
    Ok(bytes)
}

/// Parses the bytes of a config file (YAML, or JSON, which is YAML too). It goes through
/// a JSON value so the file and the operator's JSON stream share one shape, and errors
/// name the field (`listeners[0].bind: invalid socket address`). Refused before that:
/// text that is not UTF-8, flow nesting deeper than [`MAX_CONFIG_DEPTH`] (checked by a
/// linear pre-pass, see `yaml_depth`); while building the value: a key that appears
/// twice in a mapping (the parsers would let the last one win silently), any nesting
/// deeper than [`MAX_CONFIG_DEPTH`], and more than [`MAX_VALUES_PER_BYTE`] values per
/// byte of the file (aliases expanded).
fn parse(path: &Path, bytes: &[u8]) -> Result<ProxyConfig, ConfigError> {
    let err = |message: String| ConfigError::Parse {
        path: path.to_owned(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        err(format!(
            "not UTF-8: invalid byte at line {line} (byte offset {at}); save the file as UTF-8"
        ))
    })?;
    if let Err(at) = yaml_depth::check(text, MAX_CONFIG_DEPTH) {
        return Err(err(format!(
            "nested deeper than {MAX_CONFIG_DEPTH} levels at line {} column {}",
            at.line, at.column
        )));
    }
    let max_values = (text.len() + 1).saturating_mul(MAX_VALUES_PER_BYTE);
    let value =
        checked_value(serde_norway::Deserializer::from_str(text), max_values).map_err(err)?;
    if let (Some(api_version), Some(kind)) = (value.get("apiVersion"), value.get("kind")) {
        return Err(err(format!(
            "this is a Kubernetes resource ({} {}), not a proxy config: apply it with kubectl, \
             or put it in the directory of `braid-operator --source dir:PATH`; \
             `braid-proxy run --config` takes a ProxyConfig (version, services, routes, ...)",
            api_version.as_str().unwrap_or("?"),
            kind.as_str().unwrap_or("?"),
        )));
    }
    let mut unknown = Vec::new();
    let config: ProxyConfig = deserialize_named(value, &mut unknown).map_err(err)?;
    match unknown.first() {
        None => Ok(config),
        Some(path) => Err(err(format!(
            "{path}: unknown field; check its spelling (every unknown field: {})",
            unknown.join(", ")
        ))),
    }
}

/// Deserializes a YAML document into a JSON value, refusing duplicate keys, nesting
/// deeper than [`MAX_CONFIG_DEPTH`] and more than `max_values` values. serde_norway's
/// errors name where (`services[0].name: …`).
fn checked_value<'de, D>(de: D, max_values: usize) -> Result<serde_json::Value, String>
where
    D: de::Deserializer<'de>,
{
    let left = std::cell::Cell::new(max_values);
    Checked {
        depth: 0,
        left: &left,
        max_values,
    }
    .deserialize(de)
    .map_err(|e| e.to_string())
}

/// Builds a JSON value `depth` levels down, of at most `left` more values.
#[derive(Clone, Copy)]
struct Checked<'a> {
    depth: usize,
    left: &'a std::cell::Cell<usize>,
    max_values: usize,
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        // Counted before it is built: an alias is refused before it is expanded.
        match self.left.get().checked_sub(1) {
            Some(left) => self.left.set(left),
            None => {
                return Err(de::Error::custom(format_args!(
                    "more than {} values ({MAX_VALUES_PER_BYTE} per byte of the file): YAML \
                     aliases repeat what their anchor holds, and these repeat too much; \
                     write fewer aliases",
                    self.max_values
                )));
            }
        }
        de.deserialize_any(self)
    }
}

impl Checked<'_> {
    fn nest<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_CONFIG_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_CONFIG_DEPTH} levels"
            )));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON-compatible value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map(Into::into)
            .map_err(|_| E::custom(format_args!("number {v} out of range")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(Into::into)
            .map_err(|_| E::custom(format_args!("number {v} out of range")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // As serde_json's own Value does: NaN and infinities have no JSON form.
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let inner = self.nest()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let inner = self.nest()?;
        let mut entries = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.contains_key(&key) {
                // Failing inside the value puts the key on the error's path.
                return map.next_value_seed(Duplicate);
            }
            let value = map.next_value_seed(inner)?;
            entries.insert(key, value);
        }
        Ok(serde_json::Value::Object(entries))
    }
}

/// The value of a key seen before in the same mapping: always an error.
struct Duplicate;

impl Duplicate {
    fn error<E: de::Error>() -> E {
        E::custom(
            "duplicate key (a key may appear once in a mapping; the parser would keep only the last)",
        )
    }
}

impl<'de> DeserializeSeed<'de> for Duplicate {
    type Value = serde_json::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        // Through the deserializer, not straight away, so that serde_norway adds the
        // path and the line to the error.
        de.deserialize_any(self)
    }
}

/// Fails on whatever value it is shown.
macro_rules! refuse {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name<E: de::Error>(self, $(_: $arg),*) -> Result<Self::Value, E> {
            Err(Self::error())
        })*
    };
}

impl<'de> Visitor<'de> for Duplicate {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no value (the key is a duplicate)")
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_bytes(&[u8]),
        visit_unit(),
        visit_none(),
    );

    fn visit_some<D: de::Deserializer<'de>>(self, _: D) -> Result<Self::Value, D::Error> {
        Err(Self::error())
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, _: D) -> Result<Self::Value, D::Error> {
        Err(Self::error())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(Self::error())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(Self::error())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(Self::error())
    }
}

/// Parses one line of the operator's stream: a ProxyConfig as JSON, read straight from
/// the bytes (a large mesh's config is megabytes; no intermediate value). Errors name the
/// field, as for files.
pub fn parse_json(json: &[u8]) -> Result<ProxyConfig, ConfigError> {
    let config: ProxyConfig = parse_line(json)?;
    Ok(config)
}

/// Parses a delta line of the operator's stream (`{"delta":{…}}`), as [`parse_json`].
pub fn parse_delta(json: &[u8]) -> Result<ConfigDelta, ConfigError> {
    let line: DeltaLine = parse_line(json)?;
    Ok(line.delta)
}

fn parse_line<T: Versioned + serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut unknown = Vec::new();
    let parsed: T = deserialize_named(&mut de, &mut unknown).map_err(ConfigError::Decode)?;
    de.end().map_err(|e| ConfigError::Decode(e.to_string()))?;
    if !unknown.is_empty() {
        // A newer operator: what this proxy does not know, it cannot apply, but the rest
        // of the config is good.
        tracing::warn!(fields = %unknown.join(", "), version = %parsed.version(), "config has fields this proxy does not know; ignoring them (upgrade the proxy)");
    }
    Ok(parsed)
}

/// What a stream line makes: a full config or a delta, for the log.
trait Versioned {
    fn version(&self) -> &str;
}

impl Versioned for ProxyConfig {
    fn version(&self) -> &str {
        &self.version
    }
}

impl Versioned for DeltaLine {
    fn version(&self) -> &str {
        &self.delta.version
    }
}

/// Deserializes a ProxyConfig (or a delta); an error says at which field
/// (`listeners[0].bind: …`). The paths of fields it does not know are pushed onto
/// `unknown`.
fn deserialize_named<'de, D, T>(de: D, unknown: &mut Vec<String>) -> Result<T, String>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(field_path(&path));
    let de = serde_ignored::Deserializer::new(de, &mut note);
    serde_path_to_error::deserialize(de).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// `path` spelled as every other error spells a field: `services[0].ports[1].name`
/// (serde_ignored's own spelling is `services.0.ports.1.name`).
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// The current routing tables, shared by every listener, plus whether any config has
/// been applied yet (the proxy is not ready before).
pub struct TableStore {
    current: ArcSwap<Tables>,
    loaded: std::sync::atomic::AtomicBool,
    on_apply: Box<dyn Fn(&Tables) + Send + Sync>,
    /// Counts swaps, for whoever waits for a config to arrive.
    swaps: tokio::sync::watch::Sender<u64>,
}

impl TableStore {
    /// A store holding an empty config; `on_apply` runs after each successful swap
    /// (metrics, listener reconciliation).
    pub fn new(on_apply: impl Fn(&Tables) + Send + Sync + 'static) -> Result<Self, ConfigError> {
        Ok(Self {
            current: ArcSwap::from_pointee(Tables::build(ProxyConfig::default())?),
            loaded: std::sync::atomic::AtomicBool::new(false),
            on_apply: Box::new(on_apply),
            swaps: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Changes each time new tables are swapped in.
    pub fn swaps(&self) -> tokio::sync::watch::Receiver<u64> {
        self.swaps.subscribe()
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
        self.swaps.send_modify(|n| *n += 1);
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
    pub fn load_initial(&self, store: &TableStore) -> Result<Vec<u8>, ConfigError> {
        let bytes = read_bounded(&self.path)?;
        store.apply(parse(&self.path, &bytes)?)?;
        Ok(bytes)
    }

    /// Applies every change until `stop` fires. Bad versions are logged once each and
    /// skipped, the last good config staying in force.
    pub async fn watch(self, store: Arc<TableStore>, mut last: Vec<u8>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        // A file that cannot be read (too large, no permission) stays so across polls:
        // its refusal is logged when it changes, not every poll.
        let mut last_refusal: Option<String> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let path = self.path.clone();
            let read = tokio::task::spawn_blocking(move || read_bounded(&path)).await;
            let bytes = match read {
                Ok(Ok(bytes)) => bytes,
                // A file being replaced may be briefly absent.
                Ok(Err(ConfigError::Read { source, .. }))
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Ok(Err(e)) => {
                    let message = e.to_string();
                    if last_refusal.as_ref() != Some(&message) {
                        tracing::error!(error = %message, "config refused; keeping the last good one");
                        last_refusal = Some(message);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the config file failed");
                    continue;
                }
            };
            last_refusal = None;
            if bytes == last {
                continue;
            }
            last = bytes;
            match parse(&self.path, &last).and_then(|cfg| store.apply(cfg)) {
                Ok(()) => {}
                Err(e) => tracing::error!(error = %e, "config refused; keeping the last good one"),
            }
        }
    }
}

#[cfg(test)]
mod props;

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

    // The operator's stream is read straight into the config's types: a field twice is
    // refused there too, not last-one-wins.
    #[test]
    fn duplicate_fields_fail_a_stream_line() {
        let e = parse_json(br#"{"version":"a","listeners":[],"listeners":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate field `listeners`"), "{e}");
    }

    #[test]
    fn duplicate_keys_deep_nesting_and_bad_utf8_fail_a_file() {
        let err = |text: &[u8]| parse(Path::new("c.yaml"), text).unwrap_err().to_string();
        let e = err(b"version: a\nlisteners: []\nlisteners: []\n");
        assert!(e.contains("listeners: duplicate key"), "{e}");
        let e = err(b"services:\n- name: a\n  name: b\n");
        assert!(e.contains("services[0].name: duplicate key"), "{e}");
        let e = err(br#"{"version": "a", "version": "b"}"#);
        assert!(e.contains("version: duplicate key"), "{e}");
        // The same key in two mappings is no duplicate.
        parse(Path::new("c.yaml"), b"services:\n- name: a\n- name: b\n").unwrap();

        let e = err(b"version: caf\xe9\n");
        assert!(
            e.contains("not UTF-8: invalid byte at line 1 (byte offset 12)"),
            "{e}"
        );

        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let e = err(format!("node: {}", nested(65)).as_bytes());
        assert!(
            e.contains("nested deeper than 64 levels at line 1 column 71"),
            "{e}"
        );
        // Block nesting passes the flow pre-pass and is stopped while building the value.
        let block: String = (1..=70).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let e = err(format!("node:\n{block}").as_bytes());
        assert!(e.contains("node.k.k.k"), "{e}");
        assert!(e.contains("nested deeper than 64 levels at line 65"), "{e}");
        // 64 levels are fine, 65 are not.
        let value =
            |text: &str| checked_value(serde_norway::Deserializer::from_str(text), usize::MAX);
        assert!(value(&nested(64)).is_ok());
        assert!(value(&nested(65)).is_err());
    }

    // Found by the property tests (`props`): 14 KB that decoded to 4 million values
    // (about 300 MB) before the budget.
    #[test]
    fn aliases_that_repeat_too_much_fail_a_file() {
        let items = vec!["x"; 2000].join(", ");
        let aliases = vec!["*a"; 2000].join(", ");
        let text = format!("a: &a [{items}]\nb: [{aliases}]\n");
        assert!(text.len() < 15_000);
        let e = parse(Path::new("c.yaml"), text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("c.yaml: b[") && e.contains("]: more than"),
            "{e}"
        );
        assert!(e.contains("YAML aliases repeat"), "{e}");
        // Anchors that repeat a block a few times are fine.
        let text = "services:\n- &s {name: a}\n- *s\n- *s\n";
        let value = checked_value(serde_norway::Deserializer::from_str(text), 16 * text.len());
        assert_eq!(value.unwrap()["services"][2]["name"], "a");
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
"
            .as_bytes(),
        )
        .unwrap_err()
        .to_string();
        // Spelled as every other error spells a field.
        assert!(err.contains("services[0].vip: unknown field"), "{err}");
        // ...while a newer operator's extra field leaves the rest of the config usable.
        let config = parse_json(
            br#"{"version":"v2","tls":{"mode":"new"},"services":[{"name":"a","retryBudget":{}}]}"#,
        )
        .unwrap();
        assert_eq!(config.version, "v2");
        assert_eq!(config.services[0].name, "a");
    }
}
