//! What EncryptionPolicies put in proxies' configs. Each workload is governed by one
//! policy: the oldest in its namespace whose selector picks it, else the oldest
//! namespace-wide one (empty selector), else the mesh-wide default (`--default-tls-mode`).
//! That policy says what the workload's inbound side accepts, and, on its endpoints in
//! every caller's config, what its server accepts and what share of callers originate
//! mTLS to it.

use braid_api::config::tls::{EndpointTls, InboundTls, PortMode, TlsMode};
use braid_crds::EncryptionPolicy;
use braid_crds::encryption_policy::TlsMode as CrdMode;

use crate::registry::{ObjectKey, Rollouts, Workload, governing_policy};

/// A workload's TLS, in the form both sides of its proxies take.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadTls {
    /// What its server accepts on each port.
    pub inbound: InboundTls,
    /// What callers are told about it.
    pub endpoint: EndpointTls,
}

/// The TLS of `workload` under `policies` (oldest first), the rollouts' progress and the
/// mesh-wide default mode.
pub fn tls_for(
    policies: &[(&ObjectKey, &EncryptionPolicy)],
    rollouts: &Rollouts,
    default_mode: TlsMode,
    workload: &Workload,
) -> WorkloadTls {
    let Some((key, policy)) = governing_policy(policies, workload) else {
        return WorkloadTls {
            inbound: InboundTls {
                mode: default_mode,
                port_overrides: Vec::new(),
            },
            endpoint: EndpointTls {
                mode: default_mode,
                rollout_percent: 100,
                port_overrides: Vec::new(),
            },
        };
    };
    let spec = &policy.spec;
    let progress = spec
        .rollout
        .as_ref()
        .filter(|r| r.auto.is_some())
        .and_then(|_| rollouts.get(key));
    let mode = match progress {
        Some(p) if p.strict => TlsMode::Strict,
        _ => proxy_mode(spec.mode),
    };
    let percent = match (&spec.rollout, progress) {
        (_, Some(p)) => p.percent,
        (Some(r), None) => r.percent.min(100) as u8,
        (None, None) => 100,
    };
    let port_overrides: Vec<PortMode> = spec
        .port_overrides
        .iter()
        .map(|o| PortMode {
            port: o.port,
            mode: proxy_mode(o.mode),
        })
        .collect();
    WorkloadTls {
        inbound: InboundTls {
            mode,
            port_overrides: port_overrides.clone(),
        },
        endpoint: EndpointTls {
            mode,
            rollout_percent: percent,
            port_overrides,
        },
    }
}

fn proxy_mode(mode: CrdMode) -> TlsMode {
    match mode {
        CrdMode::Disabled => TlsMode::Disabled,
        CrdMode::Permissive => TlsMode::Permissive,
        CrdMode::Strict => TlsMode::Strict,
    }
}
