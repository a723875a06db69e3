//! Taking the app's probes over: each is pointed at the proxy's health port
//! (`/app-health/<container>/<kind>`, plain `httpGet`), and the proxy performs the
//! original against the app over loopback. In a meshed pod kubelet's own would go wrong:
//! a strict mTLS port refuses its plaintext HTTP, its HTTPS and its gRPC, and a
//! tcpSocket probe is accepted by the proxy's inbound listener whether or not the app
//! listens. The originals are kept in an annotation so `uninject` can put them back.

use std::collections::BTreeMap;

use braid_api::probes::{AppProbe, GrpcProbe, HttpProbe, TcpProbe};
use k8s_openapi::api::core::v1::{Container, GRPCAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::HEALTH_PORT;

/// The annotation holding the original probes (`<container>/<kind>` → [`Original`]).
pub const ORIGINAL_PROBES: &str = "braid.dev/original-probes";
/// The proxy's environment variable carrying the probes it performs.
pub const APP_PROBES_ENV: &str = "BRAID_APP_PROBES";

/// A probe's original handler, as the annotation keeps it: `{"httpGet": …}`,
/// `{"tcpSocket": …}` or `{"grpc": …}`. An earlier injector's entry, a bare `httpGet`
/// (it took over nothing else), reads as `{"httpGet": …}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    /// The original `httpGet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HTTPGetAction>,
    /// The original `tcpSocket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TCPSocketAction>,
    /// The original `grpc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GRPCAction>,
}

/// [`Original`]'s own shape, for reading: unknown keys refused, so a bare `httpGet`
/// is told apart.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Tagged {
    http_get: Option<HTTPGetAction>,
    tcp_socket: Option<TCPSocketAction>,
    grpc: Option<GRPCAction>,
}

impl<'de> Deserialize<'de> for Original {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        if value.get("port").is_some() {
            return HTTPGetAction::deserialize(value)
                .map(|h| Self {
                    http_get: Some(h),
                    ..Default::default()
                })
                .map_err(D::Error::custom);
        }
        let t = Tagged::deserialize(value).map_err(D::Error::custom)?;
        Ok(Self {
            http_get: t.http_get,
            tcp_socket: t.tcp_socket,
            grpc: t.grpc,
        })
    }
}

/// The probes taken over: the originals (for the annotation) and what the proxy needs.
#[derive(Debug, Default, PartialEq)]
pub struct Rewritten {
    /// `<container>/<kind>` → the original handler.
    pub originals: BTreeMap<String, Original>,
    /// `<container>/<kind>` → the probe as `braid-proxy --app-probes` performs it.
    pub for_proxy: BTreeMap<String, AppProbe>,
}

fn probes_mut(c: &mut Container) -> [(&'static str, &mut Option<Probe>); 3] {
    [
        ("liveness", &mut c.liveness_probe),
        ("readiness", &mut c.readiness_probe),
        ("startup", &mut c.startup_probe),
    ]
}

/// Points every httpGet (HTTP and HTTPS), tcpSocket and grpc probe of `containers` at
/// the proxy's health port. Probes it cannot take over safely stay as they are: ones
/// aimed at another host (the proxy reaches only its own pod, over loopback), named
/// ports the container does not declare, schemes and ports kubelet would not accept
/// either, and exec probes, which run in the container and never cross the network.
pub fn rewrite(containers: &mut [Container]) -> Rewritten {
    let mut out = Rewritten::default();
    for c in containers.iter_mut() {
        let ports: BTreeMap<String, i32> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone()?, p.container_port)))
            .collect();
        let name = c.name.clone();
        for (kind, slot) in probes_mut(c) {
            let Some(probe) = slot.as_mut() else {
                continue;
            };
            let Some((original, for_proxy)) = take_over(probe, &ports) else {
                continue;
            };
            let key = format!("{name}/{kind}");
            out.for_proxy.insert(key.clone(), for_proxy);
            out.originals.insert(key.clone(), original);
            probe.tcp_socket = None;
            probe.grpc = None;
            probe.http_get = Some(HTTPGetAction {
                path: Some(format!("/app-health/{key}")),
                port: IntOrString::Int(HEALTH_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            });
        }
    }
    out
}

/// The port `port` names or numbers, when it is one the proxy can dial.
fn resolve(port: &IntOrString, ports: &BTreeMap<String, i32>) -> Option<u16> {
    let n = match port {
        IntOrString::Int(p) => *p,
        IntOrString::String(n) => *ports.get(n)?,
    };
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The original handler of `probe` and what the proxy does instead, when it can.
fn take_over(probe: &Probe, ports: &BTreeMap<String, i32>) -> Option<(Original, AppProbe)> {
    let elsewhere = |host: &Option<String>| host.as_deref().is_some_and(|h| !h.is_empty());
    if let Some(http) = &probe.http_get {
        if elsewhere(&http.host) {
            return None;
        }
        let https = match http.scheme.as_deref() {
            None => false,
            Some(s) if s.eq_ignore_ascii_case("HTTP") => false,
            Some(s) if s.eq_ignore_ascii_case("HTTPS") => true,
            Some(_) => return None,
        };
        let p = HttpProbe {
            port: resolve(&http.port, ports)?,
            path: http.path.clone().unwrap_or_else(|| "/".into()),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        };
        let original = Original {
            http_get: Some(http.clone()),
            ..Default::default()
        };
        Some((
            original,
            if https {
                AppProbe::Https(p)
            } else {
                AppProbe::Http(p)
            },
        ))
    } else if let Some(tcp) = &probe.tcp_socket {
        if elsewhere(&tcp.host) {
            return None;
        }
        let port = resolve(&tcp.port, ports)?;
        let original = Original {
            tcp_socket: Some(tcp.clone()),
            ..Default::default()
        };
        Some((original, AppProbe::Tcp(TcpProbe { port })))
    } else if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).ok().filter(|p| *p != 0)?;
        let original = Original {
            grpc: Some(grpc.clone()),
            ..Default::default()
        };
        let service = grpc.service.clone().unwrap_or_default();
        Some((original, AppProbe::Grpc(GrpcProbe { port, service })))
    } else {
        None
    }
}

/// Puts the original probes back (from the annotation's value).
pub fn restore(containers: &mut [Container], originals: &BTreeMap<String, Original>) {
    for c in containers.iter_mut() {
        let name = c.name.clone();
        for (kind, probe) in probes_mut(c) {
            if let (Some(original), Some(p)) =
                (originals.get(&format!("{name}/{kind}")), probe.as_mut())
            {
                p.http_get = original.http_get.clone();
                p.tcp_socket = original.tcp_socket.clone();
                p.grpc = original.grpc.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// A container from its YAML.
    fn container(yaml: &str) -> Container {
        serde_norway::from_str(yaml).unwrap()
    }

    const ALL_KINDS: &str = "
name: app
ports: [{name: http, containerPort: 8080}, {name: grpc, containerPort: 9090}]
livenessProbe: {tcpSocket: {port: http}, timeoutSeconds: 3}
readinessProbe:
  httpGet: {scheme: HTTPS, path: /healthz?full=1, port: 8443, httpHeaders: [{name: Host, value: app.example}]}
startupProbe: {grpc: {port: 9090, service: shop.Payments}, failureThreshold: 30}
";

    fn health_get(p: &Option<Probe>) -> HTTPGetAction {
        let p = p.as_ref().unwrap();
        assert!(p.tcp_socket.is_none() && p.grpc.is_none() && p.exec.is_none());
        p.http_get.clone().unwrap()
    }

    #[test]
    fn tcp_https_and_grpc_probes_move_to_the_health_port() {
        let mut c = [container(ALL_KINDS)];
        let out = rewrite(&mut c);
        for kind in ["liveness", "readiness", "startup"] {
            let probe = match kind {
                "liveness" => &c[0].liveness_probe,
                "readiness" => &c[0].readiness_probe,
                _ => &c[0].startup_probe,
            };
            let get = health_get(probe);
            assert_eq!(
                get.path.as_deref(),
                Some(&*format!("/app-health/app/{kind}"))
            );
            assert_eq!(get.port, IntOrString::Int(HEALTH_PORT));
            assert_eq!(get.scheme.as_deref(), Some("HTTP"));
        }
        // kubelet's timing stays.
        assert_eq!(
            c[0].liveness_probe.as_ref().unwrap().timeout_seconds,
            Some(3)
        );
        assert_eq!(
            c[0].startup_probe.as_ref().unwrap().failure_threshold,
            Some(30)
        );
        let for_proxy = serde_json::to_value(&out.for_proxy).unwrap();
        assert_eq!(
            for_proxy,
            json!({
                "app/liveness": {"tcp": {"port": 8080}},
                "app/readiness": {"https": {
                    "port": 8443, "path": "/healthz?full=1", "headers": [["Host", "app.example"]]
                }},
                "app/startup": {"grpc": {"port": 9090, "service": "shop.Payments"}},
            })
        );
    }

    #[test]
    fn plain_http_probes_keep_their_shape_with_the_kind_named() {
        let mut c = [container(
            "{name: app, readinessProbe: {httpGet: {port: 8080}}, livenessProbe: {grpc: {port: 9090}}}",
        )];
        let out = rewrite(&mut c);
        assert_eq!(
            serde_json::to_value(&out.for_proxy).unwrap(),
            json!({
                "app/readiness": {"http": {"port": 8080, "path": "/", "headers": []}},
                "app/liveness": {"grpc": {"port": 9090, "service": ""}},
            })
        );
    }

    #[test]
    fn probes_the_proxy_cannot_perform_over_loopback_stay() {
        let yaml = "
name: app
ports: [{name: http, containerPort: 8080}]
livenessProbe: {exec: {command: [/bin/true]}}
readinessProbe: {tcpSocket: {port: 5432, host: db.example}}
startupProbe: {httpGet: {scheme: HTTPS, port: undeclared}}
";
        let mut c = [container(yaml)];
        let out = rewrite(&mut c);
        assert_eq!(c[0], container(yaml));
        assert!(out.for_proxy.is_empty() && out.originals.is_empty());
        let mut c = [container(
            "{name: app, readinessProbe: {tcpSocket: {port: named}}, livenessProbe: {grpc: {port: 70000}}}",
        )];
        let before = c.clone();
        assert!(rewrite(&mut c).for_proxy.is_empty());
        assert_eq!(
            c, before,
            "an unknown named port and an impossible one stay"
        );
    }

    #[test]
    fn restore_puts_every_kind_back_exactly() {
        let mut c = [container(ALL_KINDS)];
        let out = rewrite(&mut c);
        assert_ne!(c[0], container(ALL_KINDS), "all three were taken over");
        // Through the annotation's text, as uninject reads it.
        let text = serde_json::to_string(&out.originals).unwrap();
        restore(&mut c, &serde_json::from_str(&text).unwrap());
        assert_eq!(c[0], container(ALL_KINDS));
    }

    #[test]
    fn an_earlier_injectors_annotation_still_restores() {
        // Before tcpSocket/HTTPS/gRPC were taken over, each value was a bare httpGet.
        let original =
            "{name: app, readinessProbe: {httpGet: {path: /ready, port: 8080, scheme: HTTP}}}";
        let mut c = [container(original)];
        rewrite(&mut c);
        let legacy = r#"{"app/readiness": {"path": "/ready", "port": 8080, "scheme": "HTTP"}}"#;
        restore(&mut c, &serde_json::from_str(legacy).unwrap());
        assert_eq!(c[0], container(original));
    }
}
