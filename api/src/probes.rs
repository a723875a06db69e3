//! The app's probes as the injector hands them to the proxy (`--app-probes`, JSON): the
//! originals of the pod's liveness, readiness and startup probes, which the proxy
//! performs against the app on kubelet's behalf (kubelet itself is pointed at the
//! proxy's health port).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One original HTTP(S) probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// The app's port.
    pub port: u16,
    /// The path, with its query.
    #[serde(default = "root")]
    pub path: String,
    /// Extra request headers (`Host` among them, when the probe set one).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

fn root() -> String {
    "/".into()
}

/// One original tcpSocket probe: the app's port must accept a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpProbe {
    /// The app's port.
    pub port: u16,
}

/// One original gRPC probe: `grpc.health.v1.Health/Check` over h2c.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpcProbe {
    /// The app's port.
    pub port: u16,
    /// The service asked about; empty for the server as a whole.
    #[serde(default)]
    pub service: String,
}

/// A probe the proxy performs, as `--app-probes` carries it: `{"http": {…}}`,
/// `{"https": {…}}`, `{"tcp": {…}}` or `{"grpc": {…}}`. A bare HTTP probe
/// (`{"port": …, "path": …}`, what injectors wrote before the kind was named) is read
/// as `http`, so pods injected earlier keep their probes under a newer proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProbe {
    /// `httpGet` with scheme HTTP.
    Http(HttpProbe),
    /// `httpGet` with scheme HTTPS: the certificate is not verified, as kubelet does not.
    Https(HttpProbe),
    /// `tcpSocket`.
    Tcp(TcpProbe),
    /// `grpc`.
    Grpc(GrpcProbe),
}

/// The tagged form alone, for [`AppProbe`]'s reading.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Tagged {
    Http(HttpProbe),
    Https(HttpProbe),
    Tcp(TcpProbe),
    Grpc(GrpcProbe),
}

impl<'de> Deserialize<'de> for AppProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        if value.get("port").is_some() {
            return HttpProbe::deserialize(value)
                .map(Self::Http)
                .map_err(D::Error::custom);
        }
        Ok(
            match Tagged::deserialize(value).map_err(D::Error::custom)? {
                Tagged::Http(p) => Self::Http(p),
                Tagged::Https(p) => Self::Https(p),
                Tagged::Tcp(p) => Self::Tcp(p),
                Tagged::Grpc(p) => Self::Grpc(p),
            },
        )
    }
}

impl AppProbe {
    /// The app's port it probes.
    pub fn port(&self) -> u16 {
        match self {
            Self::Http(p) | Self::Https(p) => p.port,
            Self::Tcp(p) => p.port,
            Self::Grpc(p) => p.port,
        }
    }
}

/// The probes by `<container>/<kind>` (kind: `liveness`, `readiness` or `startup`).
pub type AppProbes = HashMap<String, AppProbe>;

/// `--app-probes` is not what the injector writes.
#[derive(Debug, thiserror::Error)]
#[error("--app-probes: {0}")]
pub struct ParseError(#[from] serde_json::Error);

/// Parses `--app-probes` (JSON, as the injector writes it).
pub fn parse(json: &str) -> Result<AppProbes, ParseError> {
    if json.trim().is_empty() {
        return Ok(AppProbes::new());
    }
    Ok(serde_json::from_str(json)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_the_tagged_and_the_earlier_shape_parse() {
        let probes = parse(
            r#"{"a/readiness": {"port": 8080, "path": "/ready"},
                "a/liveness": {"https": {"port": 8443}},
                "a/startup": {"grpc": {"port": 9090}},
                "b/readiness": {"tcp": {"port": 5432}}}"#,
        )
        .unwrap();
        let http = |port, path: &str| HttpProbe {
            port,
            path: path.into(),
            headers: vec![],
        };
        assert_eq!(probes["a/readiness"], AppProbe::Http(http(8080, "/ready")));
        assert_eq!(probes["a/liveness"], AppProbe::Https(http(8443, "/")));
        assert_eq!(
            probes["a/startup"],
            AppProbe::Grpc(GrpcProbe {
                port: 9090,
                service: String::new()
            })
        );
        assert_eq!(
            probes["b/readiness"],
            AppProbe::Tcp(TcpProbe { port: 5432 })
        );
        // What the proxy reads back is what the injector writes.
        let again = serde_json::to_string(&probes).unwrap();
        assert_eq!(parse(&again).unwrap(), probes);
        let err = parse(r#"{"a/readiness": {"udp": {"port": 53}}}"#).unwrap_err();
        assert!(err.to_string().contains("udp"), "{err}");
        assert!(parse("").unwrap().is_empty());
    }
}
