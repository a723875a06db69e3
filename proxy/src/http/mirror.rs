//! Mirror copies: sent in the background, their answers read and dropped, a bounded
//! number at once so a slow shadow group cannot pile up tasks and sockets in the
//! caller's proxy. A copy's host carries `-shadow` (as with Envoy), so the shadow's logs
//! and metrics tell copies from real traffic. HTTP/1.1 copies are made from the request
//! bytes the relay holds; HTTP/2 ones from the request hyper parsed.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use super::h1::Asked;
use super::{ForwardError, Pool, UpBody};
use crate::balance::{Endpoint, Upstream};

/// How long a copy may take before it is given up.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);
/// Copies in flight at once, per direction (one `Mirrors` per direction); beyond, copies
/// are dropped (and counted).
const MAX_IN_FLIGHT: usize = 256;

/// Sends mirror copies.
#[derive(Clone)]
pub struct Mirrors {
    pool: Arc<Pool>,
    slots: Arc<Semaphore>,
}

impl Mirrors {
    /// Copies sent through `pool`.
    pub fn new(pool: Arc<Pool>) -> Self {
        Self {
            pool,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Sends `req` over HTTP/2 to `endpoint` in the background; `false` when too many
    /// copies are in flight already and this one is dropped.
    pub fn send_h2(&self, endpoint: &Endpoint, mut req: Request<UpBody>) -> bool {
        shadow_host(&mut req);
        self.spawn(endpoint, move |pool, up| async move {
            let resp = pool.send_h2(&up, req).await?;
            // Read to the end, so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok(())
        })
    }

    /// Sends `copy` (an HTTP/1.1 head with its shadow Host and the whole body, as the
    /// relay made it) to `endpoint` in the background; `false` when too many copies are
    /// in flight already and this one is dropped.
    pub fn send_h1(&self, endpoint: &Endpoint, copy: Vec<u8>, asked: &Asked<'_>) -> bool {
        let method = asked.method.clone();
        let http10 = asked.http10;
        self.spawn(endpoint, move |pool, up| async move {
            let asked = Asked {
                method: &method,
                http10,
                tunnel: None,
            };
            super::h1::send_and_drop(&pool, &up, &copy, &asked, MIRROR_TIMEOUT).await
        })
    }

    /// Runs `exchange` against `endpoint` in the background under a slot, if one is free.
    fn spawn<F, Fut>(&self, endpoint: &Endpoint, exchange: F) -> bool
    where
        F: FnOnce(Arc<Pool>, Upstream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), ForwardError>> + Send,
    {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return false;
        };
        let pool = self.pool.clone();
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let addr = endpoint.addr;
            let up = endpoint.upstream();
            // The copy is load on the endpoint too, which it may share with a real group.
            let in_flight = endpoint.load.start();
            match tokio::time::timeout(MIRROR_TIMEOUT, exchange(pool, up)).await {
                Ok(Ok(())) => in_flight.done(),
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "mirror copy failed"),
                Err(_) => tracing::debug!(%addr, "mirror copy timed out"),
            }
            drop(slot);
        });
        true
    }
}

/// `payments:80` → `payments-shadow:80`, in the `host` header and the URI's authority.
fn shadow_host(req: &mut Request<UpBody>) {
    if let Some(host) = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&shadowed(host))
    {
        req.headers_mut().insert(http::header::HOST, v);
    }
    if let Some(authority) = req.uri().authority() {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = shadowed(authority.as_str()).parse().ok();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// `host[:port]` with `-shadow` after the host.
pub(super) fn shadowed(authority: &str) -> String {
    match authority.rsplit_once(':') {
        // Not a bracketed IPv6 address's own colon.
        Some((host, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Either, Full};

    #[test]
    fn copies_carry_a_shadow_host() {
        assert_eq!(shadowed("payments:80"), "payments-shadow:80");
        assert_eq!(shadowed("payments.shop.svc"), "payments.shop.svc-shadow");
        assert_eq!(shadowed("[fd00::1]:8080"), "[fd00::1]-shadow:8080");
        let mut req = Request::get("http://payments:80/x")
            .header("host", "payments:80")
            .body(Either::Right(Full::default()))
            .unwrap();
        shadow_host(&mut req);
        assert_eq!(req.headers()["host"], "payments-shadow:80");
        assert_eq!(req.uri().to_string(), "http://payments-shadow:80/x");
    }
}
