//! Workload identities: the one place a SPIFFE id is built or read.
//!
//! A workload's identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`
//! (Istio's and Linkerd's shape): the operator's CA signs it into the proxy's certificate,
//! the compiler writes it as the identity callers expect of an endpoint, and a server's
//! proxy reads it from its caller's certificate.

use std::fmt;
use std::str::FromStr;

/// A workload's identity: whom its service account speaks for, in which trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId {
    /// The mesh's trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The workload's namespace.
    pub namespace: String,
    /// Its service account.
    pub service_account: String,
}

impl WorkloadId {
    /// The identity of `service_account` in `namespace` under `trust_domain`.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// A string that is not a workload's SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a workload identity: write spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
)]
pub struct NotAnIdentity(String);

impl FromStr for WorkloadId {
    type Err = NotAnIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = || NotAnIdentity(s.to_owned());
        let rest = s.strip_prefix("spiffe://").ok_or_else(refuse)?;
        let mut parts = rest.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None)
                if [td, ns, sa].iter().all(|p| !p.is_empty()) =>
            {
                Ok(Self::new(td, ns, sa))
            }
            _ => Err(refuse()),
        }
    }
}

impl From<&WorkloadId> for crate::config::Identity {
    fn from(id: &WorkloadId) -> Self {
        Self(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_written_and_read_back() {
        let id = WorkloadId::new("cluster.local", "shop", "payments");
        let text = "spiffe://cluster.local/ns/shop/sa/payments";
        assert_eq!(id.to_string(), text);
        assert_eq!(text.parse::<WorkloadId>().unwrap(), id);
        assert_eq!(crate::config::Identity::from(&id).0, text);
        for bad in [
            "cluster.local/ns/shop/sa/payments",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns//sa/payments",
            "spiffe://cluster.local/ns/shop/sa/payments/extra",
            "spiffe://cluster.local/namespace/shop/sa/payments",
        ] {
            let e = bad.parse::<WorkloadId>().unwrap_err().to_string();
            assert!(e.contains("spiffe://<trust-domain>/ns/"), "{bad}: {e}");
        }
    }
}
