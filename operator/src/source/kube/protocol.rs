//! A Service port's protocol, from its `appProtocol` or, failing that, its name.

use braid_api::config::Protocol;

/// What a port carries: its `appProtocol` when braid knows the value, else the Istio-style
/// prefix of its name (`http-web`, `grpc`), else [`Protocol::Detect`]. Matching ignores
/// case. Naming the protocol spares the proxy its detection read, and for protocols whose
/// server speaks first (MySQL) it avoids waiting for a client byte that never comes.
pub fn port_protocol(app_protocol: Option<&str>, port_name: Option<&str>) -> Protocol {
    app_protocol
        .and_then(from_app_protocol)
        .or_else(|| port_name.and_then(from_port_name))
        .unwrap_or(Protocol::Detect)
}

/// `appProtocol` values: IANA names, Kubernetes' `kubernetes.io/*` names and the common
/// implementation-specific ones. An unknown value falls back to the port name, as in Istio.
fn from_app_protocol(value: &str) -> Option<Protocol> {
    match value.to_ascii_lowercase().as_str() {
        "kubernetes.io/h2c" => Some(Protocol::Http2),
        // WebSocket starts as an HTTP/1.1 upgrade; over TLS the proxy sees only bytes.
        "kubernetes.io/ws" => Some(Protocol::Http),
        "kubernetes.io/wss" => Some(Protocol::Tcp),
        other => from_token(other),
    }
}

/// `http`, `http-web`, `grpc-web-api`: the part before the first `-` (or `grpc-web`).
fn from_port_name(name: &str) -> Option<Protocol> {
    let name = name.to_ascii_lowercase();
    // `grpc-web` first: its prefix `grpc-` would otherwise claim it.
    if name == "grpc-web" || name.starts_with("grpc-web-") {
        return from_token("grpc-web");
    }
    from_token(name.split('-').next().unwrap_or_default())
}

fn from_token(token: &str) -> Option<Protocol> {
    match token {
        // HTTP/1.1 or HTTP/2 with prior knowledge: the proxy tells them apart by the preface.
        "http" | "grpc-web" => Some(Protocol::Http),
        "http2" | "h2c" | "grpc" => Some(Protocol::Http2),
        // TLS the application terminates itself, and protocols that are not HTTP (some of
        // whose servers speak first) are copied as bytes.
        "tcp" | "https" | "tls" | "mysql" | "mongo" | "redis" | "postgres" | "postgresql" => {
            Some(Protocol::Tcp)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_decides() {
        let cases = [
            ("http", Protocol::Http),
            ("HTTP", Protocol::Http),
            ("kubernetes.io/h2c", Protocol::Http2),
            ("grpc", Protocol::Http2),
            ("http2", Protocol::Http2),
            ("grpc-web", Protocol::Http),
            ("kubernetes.io/ws", Protocol::Http),
            ("kubernetes.io/wss", Protocol::Tcp),
            ("tcp", Protocol::Tcp),
            ("https", Protocol::Tcp),
            ("mysql", Protocol::Tcp),
        ];
        for (app, want) in cases {
            // The port name says otherwise; appProtocol wins.
            assert_eq!(port_protocol(Some(app), Some("tcp-x")), want, "{app}");
        }
    }

    #[test]
    fn unknown_app_protocol_falls_back_to_the_name() {
        assert_eq!(
            port_protocol(Some("example.com/custom"), Some("grpc-api")),
            Protocol::Http2
        );
        assert_eq!(
            port_protocol(Some("kubernetes.io/other"), None),
            Protocol::Detect
        );
        assert_eq!(port_protocol(Some("sctp"), Some("web")), Protocol::Detect);
    }

    #[test]
    fn port_name_prefixes() {
        let cases = [
            ("http", Protocol::Http),
            ("http-web", Protocol::Http),
            ("Http-Web", Protocol::Http),
            ("http2-api", Protocol::Http2),
            ("grpc", Protocol::Http2),
            ("grpc-api", Protocol::Http2),
            ("grpc-web", Protocol::Http),
            ("grpc-web-api", Protocol::Http),
            ("tcp-db", Protocol::Tcp),
            ("mysql", Protocol::Tcp),
            ("web", Protocol::Detect),
            ("httpx", Protocol::Detect),
            ("metrics", Protocol::Detect),
            ("", Protocol::Detect),
        ];
        for (name, want) in cases {
            assert_eq!(port_protocol(None, Some(name)), want, "{name}");
        }
        assert_eq!(port_protocol(None, None), Protocol::Detect);
    }
}
