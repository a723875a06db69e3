//! The upstream connections one downstream HTTP/1.1 connection holds between its
//! requests, so back-to-back requests skip the shared pool.

use std::sync::{Arc, Weak};

use crate::balance::Upstream;
use crate::http::pool::MAX_HELD;
use crate::http::{Pool, RawConn};

/// Relayed upstream connections held by one downstream connection (one per endpoint, a
/// few endpoints at most); they go back to the pool when it ends.
pub struct Held {
    pool: Weak<Pool>,
    /// The pool's idle limit: a held connection idle longer is not reused either.
    upstream_idle: std::time::Duration,
    conns: Vec<(Upstream, RawConn)>,
}

impl Held {
    /// Holds connections taken from, and returned to, `pool`.
    pub fn new(pool: &Arc<Pool>) -> Self {
        Self {
            pool: Arc::downgrade(pool),
            upstream_idle: pool.upstream_idle(),
            conns: Vec::new(),
        }
    }

    /// The held connection to `up` if it is still good, else an idle pooled one.
    pub fn take(&mut self, up: &Upstream) -> Option<RawConn> {
        if let Some(i) = self.conns.iter().position(|(a, _)| a == up) {
            let (_, conn) = self.conns.swap_remove(i);
            if !conn.stale(self.upstream_idle) && conn.reusable() {
                return Some(conn);
            }
        }
        self.pool.upgrade()?.take_raw(up)
    }

    /// Gives every held connection back to the pool (the downstream connection went
    /// idle: the pool closes them when they have been idle too long).
    pub fn release(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            for (up, conn) in self.conns.drain(..) {
                pool.put_raw(up, conn);
            }
        }
    }

    /// Holds `conn` for the next request to `up`; the oldest held one goes back to the
    /// pool when too many are held.
    pub fn put(&mut self, up: Upstream, mut conn: RawConn) {
        conn.idle();
        self.conns.push((up, conn));
        if self.conns.len() > MAX_HELD {
            let (up, conn) = self.conns.remove(0);
            if let Some(pool) = self.pool.upgrade() {
                pool.put_raw(up, conn);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}
