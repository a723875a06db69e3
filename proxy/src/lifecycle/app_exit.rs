//! Deciding, from what the proxy can see, that the app has exited. Pure: the
//! `wait-app-exit` hook feeds it observations.
//!
//! Without native sidecars, every container of a terminating pod gets SIGTERM at once,
//! and a proxy that drained at once would cut off the app's last outbound calls (a known
//! pain with other meshes). So the proxy's `preStop` hook waits until the app is gone:
//! none of its declared ports accepts connections any more, it is answering no request
//! that came through the proxy (a graceful shutdown closes the listener first, then
//! finishes open requests, which may still call out), and it holds no outbound
//! connection through the proxy, all for a quiet period (a pool may close one
//! connection and open the next a moment later).

use std::time::{Duration, Instant};

/// One look at the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Whether any of the app's declared ports accepts connections; `None` when the pod
    /// declares no ports, so only outbound connections tell.
    pub app_listening: Option<bool>,
    /// Inbound HTTP requests the app has not answered yet.
    pub inbound_requests: i64,
    /// Outbound connections open in the proxy now.
    pub outbound_open: i64,
}

/// What the hook should do after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep serving; the reason is logged.
    Wait(&'static str),
    /// The app has exited: let the kubelet stop the proxy.
    Exited,
}

/// Remembers how long the pod has looked quiet.
#[derive(Debug, Clone)]
pub struct ExitWatch {
    quiet: Duration,
    quiet_since: Option<Instant>,
}

impl ExitWatch {
    /// The app counts as exited once it has looked gone for `quiet`.
    pub fn new(quiet: Duration) -> Self {
        Self {
            quiet,
            quiet_since: None,
        }
    }

    /// Takes one observation made at `now`.
    pub fn observe(&mut self, seen: Observation, now: Instant) -> Verdict {
        let busy = if seen.app_listening == Some(true) {
            Some("the app still accepts connections on its ports")
        } else if seen.inbound_requests > 0 {
            Some("the app is still answering requests")
        } else if seen.outbound_open > 0 {
            Some("the app still has outbound connections open")
        } else {
            None
        };
        if let Some(why) = busy {
            self.quiet_since = None;
            return Verdict::Wait(why);
        }
        let since = *self.quiet_since.get_or_insert(now);
        if now.duration_since(since) >= self.quiet {
            Verdict::Exited
        } else {
            Verdict::Wait("the app looks gone; making sure")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(2);

    fn seen(app_listening: Option<bool>, outbound_open: i64) -> Observation {
        Observation {
            app_listening,
            inbound_requests: 0,
            outbound_open,
        }
    }

    #[test]
    fn waits_for_requests_the_app_is_still_answering() {
        let t0 = Instant::now();
        let mut w = ExitWatch::new(Duration::ZERO);
        let answering = Observation {
            app_listening: Some(false),
            inbound_requests: 1,
            outbound_open: 0,
        };
        assert!(matches!(w.observe(answering, t0), Verdict::Wait(r) if r.contains("answering")));
        assert_eq!(w.observe(seen(Some(false), 0), t0), Verdict::Exited);
    }

    #[test]
    fn waits_while_the_app_listens_or_calls_out() {
        let t0 = Instant::now();
        let mut w = ExitWatch::new(QUIET);
        assert!(
            matches!(w.observe(seen(Some(true), 0), t0), Verdict::Wait(r) if r.contains("ports"))
        );
        // Listening closed but a call still open: the proxy must keep serving it.
        let later = t0 + Duration::from_secs(60);
        assert!(
            matches!(w.observe(seen(Some(false), 1), later), Verdict::Wait(r) if r.contains("outbound"))
        );
    }

    #[test]
    fn exits_only_after_a_whole_quiet_period() {
        let t0 = Instant::now();
        let mut w = ExitWatch::new(QUIET);
        assert!(matches!(
            w.observe(seen(Some(false), 0), t0),
            Verdict::Wait(_)
        ));
        assert!(matches!(
            w.observe(seen(Some(false), 0), t0 + Duration::from_secs(1)),
            Verdict::Wait(_)
        ));
        assert_eq!(w.observe(seen(Some(false), 0), t0 + QUIET), Verdict::Exited);
    }

    #[test]
    fn a_new_connection_restarts_the_quiet_period() {
        let t0 = Instant::now();
        let mut w = ExitWatch::new(QUIET);
        w.observe(seen(None, 0), t0);
        // A pool reconnecting: busy again before the period ended.
        w.observe(seen(None, 1), t0 + Duration::from_millis(1500));
        assert!(matches!(
            w.observe(seen(None, 0), t0 + Duration::from_millis(2500)),
            Verdict::Wait(_)
        ));
        assert_eq!(
            w.observe(seen(None, 0), t0 + Duration::from_millis(4500)),
            Verdict::Exited
        );
    }

    #[test]
    fn without_declared_ports_outbound_connections_decide() {
        let t0 = Instant::now();
        let mut w = ExitWatch::new(Duration::ZERO);
        assert!(matches!(w.observe(seen(None, 3), t0), Verdict::Wait(_)));
        assert_eq!(w.observe(seen(None, 0), t0), Verdict::Exited);
    }
}
