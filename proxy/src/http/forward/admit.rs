//! The first step of every request, however it is sent: on the inbound side the port's
//! TLS mode (now, not when the connection opened) and overload admission; on both, the
//! target the route resolves to.

use std::sync::Arc;
use std::time::Instant;

use super::Forwarder;
use crate::config::tls::TlsMode;
use crate::http::{ForwardError, Route};
use crate::metrics::OpenGuard;
use crate::metrics::tls::RefusedReason;
use crate::overload::Admitted;
use crate::tables::OutboundTarget;

impl Forwarder {
    /// What every request goes through first, however it is sent: the port's TLS mode
    /// (now, not when the connection opened: a plaintext connection kept alive from
    /// before the port turned Strict gets no more requests through), overload admission
    /// (health checks are never shed) and the target.
    pub(in crate::http) fn begin(
        &self,
        probe: bool,
        route: &Route,
    ) -> Result<Started, ForwardError> {
        let at = Instant::now();
        // One look at the config in force serves both the port's mode and the route.
        let inbound = self.inbound();
        let (mode, target) = self.config.with_tables(|t| {
            let mode = inbound.map(|i| t.inbound_tls_mode(i.peer.port));
            (mode, route.resolve(t))
        });
        let in_flight = self.metrics.http.request_started(self.direction());
        let admitted = match inbound.and_then(|i| i.shared.overload.admission()) {
            Some(a) if !probe => match a.admit(at) {
                Some(admitted) => Some(admitted),
                None => {
                    self.metrics.overload.shed();
                    return Err(ForwardError::Overloaded);
                }
            },
            _ => None,
        };
        if let (Some(inbound), Some(mode)) = (inbound, mode) {
            let peer = &inbound.peer;
            if !peer.tls && mode == TlsMode::Strict {
                self.metrics
                    .tls
                    .refused(peer.port, RefusedReason::plaintext);
                return Err(ForwardError::PlaintextRefused(peer.port));
            }
            inbound
                .shared
                .traffic
                .inbound(peer.tls, mode, peer.source.as_deref());
        }
        let target = target.ok_or_else(|| ForwardError::NoRoute(route.describe()))?;
        Ok(Started {
            at,
            _in_flight: in_flight,
            admitted,
            target,
            telemetry: None,
        })
    }
}

/// A request admitted and routed, from its start until its response head.
pub(in crate::http) struct Started {
    pub(super) at: Instant,
    _in_flight: OpenGuard,
    pub(super) admitted: Option<Admitted>,
    /// Where it goes.
    pub(in crate::http) target: Arc<OutboundTarget>,
    /// What the access log and trace took of its head, when either is on.
    pub(in crate::http) telemetry: Option<crate::telemetry::InFlight>,
}
