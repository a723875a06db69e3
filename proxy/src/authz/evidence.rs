//! What one AccessPolicy decided, kept for the operator: counts by outcome, the callers
//! it refused (or would refuse), and what it let through while auditing, so that a
//! refusal of the same traffic after the switch to Enforce can be told apart from a
//! caller the policy was written to stop.
//!
//! "The same traffic" is the same caller (identity over mTLS, address in plaintext)
//! asking the same thing (method and normalized path, or a TCP connection): a caller
//! cannot make the policy step back by asking for something new it is refused.
//!
//! Carried from one config version to the next while the policy's rules are the same.
//! An allowed request costs an atomic add and, while auditing, a hash and one look into
//! the set of traffic seen; refusals take a lock (they are the few, and what the operator
//! needs).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use braid_api::control::{AccessCount, RefusedSource};

use super::Outcome;
use super::rule::{Asked, Caller};
use crate::config::access::AccessMode;

/// Kinds of traffic remembered as let through while auditing; more are not remembered.
const MAX_ALLOWED: usize = 4096;
/// Distinct refused callers (with their request) counted between two reports.
const MAX_REFUSED: usize = 256;
/// Refused callers named in one report: those refused after being let through first,
/// then those with the most refusals.
const REPORTED_SOURCES: usize = 10;
/// A path longer than this is cut in the evidence.
const MAX_PATH: usize = 128;

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
    /// Of `denied`, refusals of traffic let through while auditing.
    denied_allowed_before: AtomicU64,
    /// Traffic let through while auditing, by [`shape`].
    allowed_traffic: RwLock<HashSet<u64, foldhash::fast::FixedState>>,
    refused: Mutex<HashMap<RefusedKey, RefusedCounts>>,
}

/// A caller asking one kind of thing, hashed: its identity (or, in plaintext, its
/// address) and the method and path, or a TCP connection.
fn shape(caller: &Caller<'_>, asked: Asked<'_>) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x6272_6169_6400).build_hasher();
    match (caller.identity, caller.address) {
        (Some(id), _) => id.hash(&mut h),
        (None, a) => a.map(|a| a.to_canonical()).hash(&mut h),
    }
    match asked {
        Asked::Connection => 0u8.hash(&mut h),
        Asked::Request(head) => {
            head.method.as_str().hash(&mut h);
            head.path.hash(&mut h);
        }
    }
    h.finish()
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
                    self.remember(shape(caller, asked));
                }
            }
            Outcome::WouldDeny => {
                self.would_deny.fetch_add(1, Ordering::Relaxed);
                self.refused(caller, asked, |c| c.would_deny += 1);
            }
            Outcome::Denied => {
                self.denied.fetch_add(1, Ordering::Relaxed);
                let before = self
                    .allowed_traffic
                    .read()
                    .is_ok_and(|seen| seen.contains(&shape(caller, asked)));
                if before {
                    self.denied_allowed_before.fetch_add(1, Ordering::Relaxed);
                }
                self.refused(caller, asked, |c| {
                    c.denied += 1;
                    c.allowed_before |= before;
                });
            }
        }
    }

    fn remember(&self, shape: u64) {
        let known = self
            .allowed_traffic
            .read()
            .is_ok_and(|seen| seen.len() >= MAX_ALLOWED || seen.contains(&shape));
        if !known
            && let Ok(mut seen) = self.allowed_traffic.write()
            && seen.len() < MAX_ALLOWED
        {
            seen.insert(shape);
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
        self.count_refused(key, count);
    }

    fn count_refused(&self, key: RefusedKey, count: impl FnOnce(&mut RefusedCounts)) {
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
        let denied_allowed_before = self.denied_allowed_before.swap(0, Ordering::Relaxed);
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
            denied_allowed_before,
            refused_sources: sources,
        })
    }

    /// Puts back what a report that did not reach the operator carried, so that no
    /// would-be refusal goes unseen.
    pub(super) fn restore(&self, count: &AccessCount) {
        self.allowed.fetch_add(count.allowed, Ordering::Relaxed);
        self.would_deny
            .fetch_add(count.would_deny, Ordering::Relaxed);
        self.denied.fetch_add(count.denied, Ordering::Relaxed);
        self.denied_allowed_before
            .fetch_add(count.denied_allowed_before, Ordering::Relaxed);
        for s in &count.refused_sources {
            let key = RefusedKey {
                identity: s.identity.as_deref().map(Arc::from),
                address: s.address,
                request: s.request.clone(),
            };
            self.count_refused(key, |c| {
                c.would_deny += s.would_deny;
                c.denied += s.denied;
                c.allowed_before |= s.allowed_before;
            });
        }
    }
}
