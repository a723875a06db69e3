//! What one AccessPolicy decided, kept for the operator: counts by outcome, the callers
//! it refused (or would refuse), and the callers it let through while auditing, so a
//! refusal of one of them right after enforcing can be told apart from a caller the
//! policy was written to stop.
//!
//! Carried from one config version to the next while the policy's rules stay the same.
//! Allowed requests cost an atomic add and, while auditing, one look into the set of
//! callers seen; refusals take a lock (they are the few, and what the operator needs).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use braid_api::control::{AccessCount, RefusedSource};

use super::Outcome;
use super::rule::{Asked, Caller};
use crate::config::access::AccessMode;

/// Callers remembered as let through while auditing; more are not remembered.
const MAX_ALLOWED_SOURCES: usize = 4096;
/// Distinct refused callers (with their request) counted between two reports.
const MAX_REFUSED: usize = 256;
/// Refused callers named in one report: those with the most refusals.
const REPORTED_SOURCES: usize = 10;
/// A path longer than this is cut in the evidence.
const MAX_PATH: usize = 128;

/// Callers as remembered: by identity over mTLS, by address in plaintext.
#[derive(Debug, Default)]
struct Seen {
    identities: HashSet<Arc<str>>,
    addresses: HashSet<IpAddr>,
}

impl Seen {
    fn contains(&self, caller: &Caller<'_>) -> bool {
        match (caller.identity, caller.address) {
            (Some(id), _) => self.identities.contains(id),
            (None, Some(a)) => self.addresses.contains(&a.to_canonical()),
            (None, None) => false,
        }
    }

    fn len(&self) -> usize {
        self.identities.len() + self.addresses.len()
    }

    fn insert(&mut self, caller: &Caller<'_>) {
        match (caller.identity, caller.address) {
            (Some(id), _) => {
                self.identities.insert(Arc::from(id));
            }
            (None, Some(a)) => {
                self.addresses.insert(a.to_canonical());
            }
            (None, None) => {}
        }
    }
}

/// A refused caller and what it asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RefusedKey {
    identity: Option<Arc<str>>,
    address: Option<IpAddr>,
    request: Option<String>,
}

#[derive(Clone, Copy, Debug, Default)]
struct RefusedCounts {
    would_deny: u64,
    denied: u64,
    allowed_before: bool,
}

/// One policy's decisions since the last report.
#[derive(Debug, Default)]
pub struct PolicyLog {
    allowed: AtomicU64,
    would_deny: AtomicU64,
    denied: AtomicU64,
    allowed_sources: RwLock<Seen>,
    refused: Mutex<HashMap<RefusedKey, RefusedCounts>>,
}

impl PolicyLog {
    /// Records one decision of the policy (in `mode`) on `caller` asking `asked`.
    pub(super) fn record(
        &self,
        outcome: Outcome,
        mode: AccessMode,
        caller: &Caller<'_>,
        asked: Asked<'_>,
    ) {
        match outcome {
            Outcome::Allowed => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
                if mode == AccessMode::Audit {
                    self.remember(caller);
                }
            }
            Outcome::WouldDeny => {
                self.would_deny.fetch_add(1, Ordering::Relaxed);
                self.refused(caller, asked, |c| c.would_deny += 1);
            }
            Outcome::Denied => {
                self.denied.fetch_add(1, Ordering::Relaxed);
                let before = self.allowed_before(caller);
                self.refused(caller, asked, |c| {
                    c.denied += 1;
                    c.allowed_before |= before;
                });
            }
        }
    }

    /// Whether `caller` was let through while the policy audited.
    fn allowed_before(&self, caller: &Caller<'_>) -> bool {
        self.allowed_sources
            .read()
            .is_ok_and(|seen| seen.contains(caller))
    }

    fn remember(&self, caller: &Caller<'_>) {
        let known = self
            .allowed_sources
            .read()
            .is_ok_and(|seen| seen.len() >= MAX_ALLOWED_SOURCES || seen.contains(caller));
        if !known
            && let Ok(mut seen) = self.allowed_sources.write()
            && seen.len() < MAX_ALLOWED_SOURCES
        {
            seen.insert(caller);
        }
    }

    fn refused(
        &self,
        caller: &Caller<'_>,
        asked: Asked<'_>,
        count: impl FnOnce(&mut RefusedCounts),
    ) {
        let key = RefusedKey {
            identity: caller.identity.map(Arc::from),
            address: caller.address.map(|a| a.to_canonical()),
            request: match asked {
                Asked::Connection => None,
                Asked::Request(head) => {
                    let path: String = head.path.chars().take(MAX_PATH).collect();
                    Some(format!("{} {path}", head.method))
                }
            },
        };
        let Ok(mut refused) = self.refused.lock() else {
            return;
        };
        let len = refused.len();
        match refused.get_mut(&key) {
            Some(counts) => count(counts),
            None if len < MAX_REFUSED => count(refused.entry(key).or_default()),
            None => {}
        }
    }

    /// Everything counted since the last call, for the report of policy `name`; `None`
    /// when it decided nothing.
    pub(super) fn take(&self, name: &str) -> Option<AccessCount> {
        let allowed = self.allowed.swap(0, Ordering::Relaxed);
        let would_deny = self.would_deny.swap(0, Ordering::Relaxed);
        let denied = self.denied.swap(0, Ordering::Relaxed);
        let refused = self
            .refused
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if allowed + would_deny + denied == 0 {
            return None;
        }
        let mut sources: Vec<RefusedSource> = refused
            .into_iter()
            .map(|(k, c)| RefusedSource {
                identity: k.identity.map(|i| i.to_string()),
                address: k.address,
                request: k.request,
                would_deny: c.would_deny,
                denied: c.denied,
                allowed_before: c.allowed_before,
            })
            .collect();
        // Refusals of callers let through before first: they decide a step back.
        sources.sort_by(|a, b| {
            (b.allowed_before, b.denied + b.would_deny)
                .cmp(&(a.allowed_before, a.denied + a.would_deny))
                .then_with(|| {
                    (&a.identity, a.address, &a.request).cmp(&(&b.identity, b.address, &b.request))
                })
        });
        sources.truncate(REPORTED_SOURCES);
        Some(AccessCount {
            policy: name.to_owned(),
            allowed,
            would_deny,
            denied,
            refused_sources: sources,
        })
    }
}
