//! Rewriting the app's HTTP probes to the proxy's health port, so kubelet's plaintext
//! probes keep working when the app's port only takes mTLS. The proxy performs each
//! original against the app over loopback; the originals are kept in an annotation so
//! `uninject` can put them back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::HEALTH_PORT;

/// The annotation holding the original probes (`<container>/<kind>` → `httpGet`).
pub const ORIGINAL_PROBES: &str = "braid.dev/original-probes";
/// The proxy's environment variable carrying the probes it performs.
pub const APP_PROBES_ENV: &str = "BRAID_APP_PROBES";

/// The probes taken over: the originals (for the annotation) and what the proxy needs.
#[derive(Debug, Default, PartialEq)]
pub struct Rewritten {
    /// `<container>/<kind>` → the original `httpGet`.
    pub originals: BTreeMap<String, HTTPGetAction>,
    /// `<container>/<kind>` → `{port, path, headers}`, as `braid-proxy --app-probes`.
    pub for_proxy: BTreeMap<String, serde_json::Value>,
}

fn probes_mut(c: &mut Container) -> [(&'static str, &mut Option<Probe>); 3] {
    [
        ("liveness", &mut c.liveness_probe),
        ("readiness", &mut c.readiness_probe),
        ("startup", &mut c.startup_probe),
    ]
}

/// Points every plain-HTTP probe of `containers` at the proxy's health port. Probes it
/// cannot take over safely stay as they are: HTTPS ones (kubelet skips verification,
/// the proxy would not), ones aimed at another host, and named ports the container
/// does not declare.
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
        for (kind, probe) in probes_mut(c) {
            let Some(http) = probe.as_mut().and_then(|p| p.http_get.as_mut()) else {
                continue;
            };
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
                || http.host.as_deref().is_some_and(|h| !h.is_empty())
            {
                continue;
            }
            let port = match &http.port {
                IntOrString::Int(p) => Some(*p),
                IntOrString::String(n) => ports.get(n).copied(),
            };
            let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let key = format!("{name}/{kind}");
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            out.for_proxy.insert(
                key.clone(),
                serde_json::json!({
                    "port": port,
                    "path": http.path.clone().unwrap_or_else(|| "/".into()),
                    "headers": headers,
                }),
            );
            out.originals.insert(key.clone(), http.clone());
            *http = HTTPGetAction {
                path: Some(format!("/app-health/{key}")),
                port: IntOrString::Int(HEALTH_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            };
        }
    }
    out
}

/// Puts the original probes back (from the annotation's value).
pub fn restore(containers: &mut [Container], originals: &BTreeMap<String, HTTPGetAction>) {
    for c in containers.iter_mut() {
        let name = c.name.clone();
        for (kind, probe) in probes_mut(c) {
            if let (Some(original), Some(p)) =
                (originals.get(&format!("{name}/{kind}")), probe.as_mut())
            {
                p.http_get = Some(original.clone());
            }
        }
    }
}
