//! Authorization's metrics: `braid_authz_decisions_total`, recorded by
//! `crate::authz::Authorizer::check` (through counters it looks up once per policy).

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::SharedLabel;
use crate::config::access::AccessMode;

/// What a policy made of a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Decision {
    allow,
    deny,
}

/// The policy's mode, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Mode {
    audit,
    enforce,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: SharedLabel,
    decision: Decision,
    mode: Mode,
}

/// `braid_authz_decisions_total`.
#[derive(Clone, Debug, Default)]
pub struct AuthzMetrics {
    decisions: Family<DecisionLabels, Counter>,
}

impl AuthzMetrics {
    /// Registers authorization's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Requests and TCP connections each AccessPolicy decided on, by decision (deny in mode audit: would have refused) and mode",
            decisions.clone(),
        );
        Self { decisions }
    }

    /// The `allow` and `deny` counters of `policy` in `mode`.
    pub fn counters(&self, policy: &Arc<str>, mode: AccessMode) -> [Counter; 2] {
        let mode = match mode {
            AccessMode::Audit => Mode::audit,
            AccessMode::Enforce => Mode::enforce,
        };
        [Decision::allow, Decision::deny].map(|decision| {
            self.decisions
                .get_or_create(&DecisionLabels {
                    policy: SharedLabel(policy.clone()),
                    decision,
                    mode,
                })
                .clone()
        })
    }
}
