//! A braid resource as observed: valid or not, and the last version that was valid.

use std::fmt;
use std::sync::Arc;

use braid_crds::ValidationErrors;

use super::ObjectKey;

/// The four braid kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `TrafficRoute`.
    TrafficRoute,
    /// `EncryptionPolicy`.
    EncryptionPolicy,
    /// `SelfHealing`.
    SelfHealing,
    /// `AccessPolicy`.
    AccessPolicy,
}

impl Kind {
    /// The kind as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrafficRoute => "TrafficRoute",
            Self::EncryptionPolicy => "EncryptionPolicy",
            Self::SelfHealing => "SelfHealing",
            Self::AccessPolicy => "AccessPolicy",
        }
    }

    /// The kind [`as_str`](Self::as_str) names.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::TrafficRoute,
            Self::EncryptionPolicy,
            Self::SelfHealing,
            Self::AccessPolicy,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One braid resource. An invalid new generation does not take the old one out of
/// force: `accepted` keeps the last valid version, so proxies keep their config while
/// the status reports what is wrong.
#[derive(Clone, Debug)]
pub struct Observed<T> {
    /// Its namespace and name.
    pub key: ObjectKey,
    /// `metadata.generation` of what was observed.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`, as RFC 3339 text (orders conflicting resources).
    pub created: Option<String>,
    /// The current generation, or every reason it is invalid (with field paths).
    pub current: Result<Arc<T>, ValidationErrors>,
    /// The version in force: the current one when valid, else the last valid one.
    pub accepted: Option<Arc<T>>,
}

impl<T> Observed<T> {
    /// An observation; in force at once when valid.
    pub fn new(
        key: ObjectKey,
        generation: Option<i64>,
        created: Option<String>,
        current: Result<Arc<T>, ValidationErrors>,
    ) -> Self {
        let accepted = current.as_ref().ok().cloned();
        Self {
            key,
            generation,
            created,
            current,
            accepted,
        }
    }
}

impl<T: PartialEq> PartialEq for Observed<T> {
    fn eq(&self, other: &Self) -> bool {
        let current_eq = match (&self.current, &other.current) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.summary() == b.summary(),
            _ => false,
        };
        self.key == other.key
            && self.generation == other.generation
            && self.created == other.created
            && current_eq
            && self.accepted == other.accepted
    }
}
