//! The ports and user of the sidecar, which the injector writes into pods, the capture
//! rules leave alone, and the proxy listens on or runs as.

/// The admin listener (loopback only): `/config_dump`, `/metrics`, `/ready`, log level.
pub const ADMIN_PORT: u16 = 15000;
/// Where the capture rules send every outgoing TCP connection of the pod.
pub const OUTBOUND_PORT: u16 = 15001;
/// Where the capture rules send every incoming TCP connection of the pod.
pub const INBOUND_PORT: u16 = 15006;
/// The health listener, on the pod's address: `/ready` and the app's own probes, for
/// kubelet, and the metrics, for Prometheus ([`SCRAPE_PATH`]).
pub const HEALTH_PORT: u16 = 15021;
/// Where on [`HEALTH_PORT`] Prometheus scrapes the proxy's metrics (the injector's
/// `prometheus.io/path`).
pub const SCRAPE_PATH: &str = "/stats/prometheus";

/// The proxy's own ports, with what each is: never captured, and no app container may
/// declare one.
pub const PROXY_PORTS: [(u16, &str); 4] = [
    (ADMIN_PORT, "admin"),
    (OUTBOUND_PORT, "outbound capture"),
    (INBOUND_PORT, "inbound capture"),
    (HEALTH_PORT, "health"),
];

/// The UID (and GID) the proxy runs as: the capture rules let its own connections out
/// uncaptured.
pub const PROXY_UID: u32 = 1337;

/// The loopback source the proxy's inbound side connects to the app from, which the
/// capture rules let through (a connection from the pod's own IP over `lo` is captured).
pub const INBOUND_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);
