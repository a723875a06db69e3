//! The first step of every request, however it is sent: on the inbound side the port's
//! TLS mode (now, not when the connection opened), the AccessPolicies in force and
//! overload admission; on both, the target the route resolves to.

use std::sync::Arc;
use std::time::Instant;

use super::Forwarder;
use crate::authz::{Asked, Judged};
use crate::config::tls::TlsMode;
use crate::http::{ForwardError, Route};
use crate::metrics::OpenGuard;
use crate::metrics::tls::RefusedReason;
use crate::overload::Admitted;
use crate::tables::{OutboundTarget, Tables};

/// What `begin` looks at of a request's head.
pub(in crate::http) struct Admission<'a> {
    /// A kubelet health check (never shed).
    pub(in crate::http) probe: bool,
    /// The method.
    pub(in crate::http) method: &'a http::Method,
    /// The path, without the query.
    pub(in crate::http) path: &'a str,
    /// The headers, parsed only if an AccessPolicy reads them.
    pub(in crate::http) headers: HeadersOf<'a>,
    /// The protocol it asks to switch the connection to (`Upgrade`), or `CONNECT`.
    pub(in crate::http) tunnel: Option<&'a str>,
}

/// A request's headers: parsed (HTTP/2), or the raw HTTP/1.1 head to parse on need.
pub(in crate::http) enum HeadersOf<'a> {
    /// Already a map.
    Parsed(&'a http::HeaderMap),
    /// An HTTP/1.1 head.
    Raw(&'a [u8]),
}

impl Forwarder {
    /// What every request goes through first, however it is sent: the port's TLS mode
    /// (now, not when the connection opened: a plaintext connection kept alive from
    /// before the port turned Strict gets no more requests through), the AccessPolicies
    /// (likewise those in force now), overload admission (health checks are never shed)
    /// and the target.
    pub(in crate::http) fn begin(
        &self,
        asked: &Admission<'_>,
        route: &Route,
    ) -> Result<Started, ForwardError> {
        let at = Instant::now();
        // One look at the config in force serves the port's mode, its policies and the
        // route.
        let inbound = self.inbound();
        let (mode, verdict, target) = self.config.with_tables(|t| {
            let mode = inbound.map(|i| t.inbound_tls_mode(i.peer.port));
            let verdict = match (inbound, mode) {
                // Strict refuses plaintext before any policy is asked.
                (Some(i), Some(TlsMode::Strict)) if !i.peer.tls => {
                    Err(ForwardError::PlaintextRefused(i.peer.port))
                }
                (Some(i), Some(_)) => self
                    .authorize(t, &i.peer, asked)
                    .map_err(ForwardError::Denied),
                _ => Ok(()),
            };
            (mode, verdict, route.resolve(t))
        });
        let in_flight = self.metrics.http.request_started(self.direction());
        if let Err(refused) = verdict {
            if let ForwardError::PlaintextRefused(port) = refused {
                self.metrics.tls.refused(port, RefusedReason::plaintext);
            }
            return Err(refused);
        }
        let admitted = match inbound.and_then(|i| i.shared.overload.admission()) {
            Some(a) if !asked.probe => match a.admit() {
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

impl Forwarder {
    /// What the AccessPolicies of `tables` say of this request from `peer`: refused by
    /// the named policy, or not.
    fn authorize(
        &self,
        tables: &Tables,
        peer: &super::InboundPeer,
        asked: &Admission<'_>,
    ) -> Result<(), std::sync::Arc<str>> {
        let access = &tables.access;
        if !access.covers(peer.port) {
            return Ok(());
        }
        if let Some(to) = asked.tunnel
            && let Some(policy) = access.refuses_tunnel(peer.port, to)
        {
            return Err(policy);
        }
        let parsed;
        let headers = match asked.headers {
            HeadersOf::Parsed(h) => h,
            HeadersOf::Raw(head) if access.reads_headers(peer.port) => {
                parsed = crate::http::h1::header_map(head);
                &parsed
            }
            HeadersOf::Raw(_) => &http::HeaderMap::new(),
        };
        // Judged as an app's router reads it: normalized path, upper-case method.
        let judged = Judged::of(asked.method, asked.path);
        let head = judged.head(headers);
        access.check(
            peer.port,
            &peer.caller(),
            Asked::Request(&head),
            &self.metrics.authz,
        )
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
