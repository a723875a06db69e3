//! `inbound`: whether a request from a caller reaches the app on one of its ports — the
//! port's mTLS mode, then the AccessPolicies covering it — decided as the inbound side
//! decides (`http/forward/admit.rs` for HTTP requests, `connection/mod.rs` for opaque
//! TCP connections), with [`crate::authz::Authorizer::explain`], which records nothing.

use std::net::IpAddr;

use braid_api::explain::{Inbound, PolicyVerdict};

use super::serde_name;
use crate::authz::{Asked, Caller, Explained, Judged, Outcome};
use crate::config::Protocol;
use crate::config::tls::TlsMode;
use crate::connection::served_as;
use crate::http::ForwardError;
use crate::routing::RequestHead;
use crate::tables::Tables;

/// Whether `req` from `identity` (`None`: plaintext) at `address` reaches the app on
/// `port`.
pub(super) fn explain(
    tables: &Tables,
    port: u16,
    identity: Option<&str>,
    address: Option<IpAddr>,
    req: &RequestHead<'_>,
) -> Inbound {
    let mode = tables.inbound_tls_mode(port);
    let mut out = Inbound {
        port,
        tls_mode: serde_name(&mode),
        identity: identity.map(str::to_owned),
        address: address.map(|a| a.to_string()),
        allowed: true,
        ..Default::default()
    };
    // Strict refuses plaintext before any policy is asked.
    if identity.is_none() && mode == TlsMode::Strict {
        out.allowed = false;
        out.refused_by = Some(ForwardError::PlaintextRefused(port).to_string());
        return out;
    }
    let access = &tables.access;
    if !access.covers(port) {
        return out;
    }
    let caller = Caller { identity, address };
    let opaque = tables.config.detection.is_opaque(port);
    // Judged as an app's router reads it: normalized path, upper-case method.
    let judged = Judged::of(req.method, req.path);
    let head = judged.head(req.headers);
    // An opaque connection is decided once, whole, as it opens; HTTP per request.
    let http = served_as(opaque, tables.inbound_protocol(port)) != Protocol::Tcp;
    let explained = match http {
        true => access.explain(port, &caller, Asked::Request(&head)),
        false => access.explain(port, &caller, Asked::Connection),
    };
    let tunnel_refused = match http {
        true => tunnel(req).and_then(|to| Some((to, access.refuses_tunnel(port, to)?))),
        false => None,
    };
    if let Some((to, policy)) = tunnel_refused {
        let mut e = explained;
        // Refused before any policy decides the request: nothing else is counted.
        for p in &mut e.policies {
            p.outcome = (p.name == policy).then_some(Outcome::Denied);
        }
        out.allowed = false;
        out.refused_by = Some(format!(
            "{}: a tunnel ({to}) would carry requests past its rules on HTTP requests",
            ForwardError::Denied(policy)
        ));
        out.policies = verdicts(&e);
        return out;
    }
    if let Some(policy) = &explained.refused_by {
        out.allowed = false;
        out.refused_by = Some(ForwardError::Denied(policy.clone()).to_string());
    }
    out.policies = verdicts(&explained);
    out
}

/// The protocol `req` opens a tunnel to, as the inbound side reads it: `CONNECT`, or an
/// HTTP/1.1 upgrade (`Connection: upgrade` and an `Upgrade` header).
fn tunnel<'a>(req: &RequestHead<'a>) -> Option<&'a str> {
    if req.method == http::Method::CONNECT {
        return Some("CONNECT");
    }
    let upgrade_token = crate::http::headers::connection_tokens(req.headers)
        .any(|t| t.eq_ignore_ascii_case("upgrade"));
    let upgrade = req.headers.get(http::header::UPGRADE)?;
    upgrade_token.then(|| upgrade.to_str().unwrap_or("unknown"))
}

/// Each policy's verdict, in words.
fn verdicts(e: &Explained) -> Vec<PolicyVerdict> {
    e.policies
        .iter()
        .map(|p| PolicyVerdict {
            name: p.name.to_string(),
            action: serde_name(&p.action),
            mode: serde_name(&p.mode),
            matched_rule: p.matched_rule.as_deref().map(str::to_owned),
            outcome: p.outcome.map(|o| format!("{o:?}")),
        })
        .collect()
}
