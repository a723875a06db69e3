//! `braid-proxy wait-app-exit`: the proxy container's `preStop` hook when it is not a
//! native sidecar. It returns once the app has exited (see [`super::app_exit`]), so the
//! kubelet's SIGTERM reaches the proxy only after the app's last outbound call; the
//! pod's grace period bounds the wait.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::admin_get;
use super::app_exit::{ExitWatch, Observation, Verdict};
use crate::admin::OpenConnections;

/// How long a connect to an app port may take before the port counts as closed.
const PORT_CHECK_TIMEOUT: Duration = Duration::from_millis(200);

/// What to watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// The proxy's admin address.
    pub admin: SocketAddr,
    /// The ports the app's containers declare.
    pub app_ports: Vec<u16>,
    /// The pod's IP, for apps that listen on it rather than on every address.
    pub pod_ip: Option<IpAddr>,
    /// How often to look.
    pub poll: Duration,
    /// How long the app must look gone.
    pub quiet: Duration,
}

/// Why the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The app closed its ports and its outbound connections.
    AppExited,
    /// The proxy's admin port stopped answering: there is nothing left to keep serving.
    ProxyGone,
}

/// Waits until the app has exited or the proxy is gone. `on_wait` hears each new
/// reason for waiting (for the hook's output).
pub async fn wait(options: &Options, mut on_wait: impl FnMut(&str)) -> Outcome {
    let mut watch = ExitWatch::new(options.quiet);
    let mut last = "";
    loop {
        let open = match admin_get(options.admin, "/connections").await {
            Some((200, body)) => serde_json::from_str::<OpenConnections>(&body).ok(),
            _ => None,
        };
        let Some(open) = open else {
            return Outcome::ProxyGone;
        };
        let app_listening = if options.app_ports.is_empty() {
            None
        } else {
            Some(any_listening(&options.app_ports, options.pod_ip).await)
        };
        let seen = Observation {
            app_listening,
            inbound_requests: open.inbound_requests,
            outbound_open: open.outbound,
        };
        match watch.observe(seen, Instant::now()) {
            Verdict::Exited => return Outcome::AppExited,
            Verdict::Wait(why) if why != last => {
                on_wait(why);
                last = why;
            }
            Verdict::Wait(_) => {}
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// Whether any of `ports` accepts a connection on loopback (IPv4 or IPv6) or on the
/// pod's IP.
async fn any_listening(ports: &[u16], pod_ip: Option<IpAddr>) -> bool {
    let ips: Vec<IpAddr> = [Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        .into_iter()
        .chain(pod_ip)
        .collect();
    for &port in ports {
        for &ip in &ips {
            let connect = tokio::net::TcpStream::connect(SocketAddr::new(ip, port));
            if let Ok(Ok(_)) = tokio::time::timeout(PORT_CHECK_TIMEOUT, connect).await {
                return true;
            }
        }
    }
    false
}
