//! The injection itself: a typed change to a pod, then a JSON patch from the pod as
//! received to the pod as changed. Both the webhook and the offline `inject` use it.

mod init;
mod probes;
mod sidecar;
mod volumes;
pub mod workload;

use k8s_openapi::api::core::v1::{EnvVar, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

pub use init::{INIT_CONTAINER, init_container, iptables_args};
pub use probes::{APP_PROBES_ENV, ORIGINAL_PROBES, Original, Rewritten, restore, rewrite};
pub use sidecar::{HEALTH_PORT, PROXY_CONTAINER, proxy_container};
pub use volumes::{
    OPERATOR_CA_CONFIGMAP, OPERATOR_CA_DIR, OPERATOR_CA_VOLUME, RUN_DIR, RUN_VOLUME, TOKEN_DIR,
    TOKEN_VOLUME, volumes,
};

use crate::annotations::{Overrides, STATUS};
use crate::settings::Settings;

/// What was injected, recorded in the `braid.dev/status` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectStatus {
    /// The injector's version.
    pub version: String,
    /// Init containers added.
    pub init_containers: Vec<String>,
    /// Containers added.
    pub containers: Vec<String>,
    /// Volumes added.
    pub volumes: Vec<String>,
    /// Pod annotations added (the `prometheus.io/*` scrape annotations); absent in
    /// records of versions that added none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
}

/// The annotations that point Prometheus (its conventional Kubernetes pod discovery) at
/// the proxy's metrics, on the health port of the pod's address.
pub fn scrape_annotations() -> [(&'static str, String); 3] {
    [
        ("prometheus.io/scrape", "true".to_owned()),
        (
            "prometheus.io/port",
            braid_api::ports::HEALTH_PORT.to_string(),
        ),
        (
            "prometheus.io/path",
            braid_api::ports::SCRAPE_PATH.to_owned(),
        ),
    ]
}

/// Why a pod cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The pod has no spec.
    #[error("the pod has no spec")]
    NoSpec,
    /// An app container declares a port the proxy listens on.
    #[error(
        "spec.containers[{container:?}].ports: {port} is braid-proxy's {what} port in the pod's shared network; move the app to another port"
    )]
    ReservedPort {
        /// The container.
        container: String,
        /// The port.
        port: i32,
        /// What the proxy uses it for.
        what: &'static str,
    },
    /// A name braid needs is taken.
    #[error("spec.{field}: the pod already has {name:?}, which braid adds; rename it")]
    NameTaken {
        /// `containers`, `initContainers` or `volumes`.
        field: &'static str,
        /// The name.
        name: String,
    },
}

/// Adds braid-init, the proxy and their volumes to `pod`.
pub fn inject(
    pod: &mut Pod,
    settings: &Settings,
    overrides: &Overrides,
) -> Result<InjectStatus, InjectError> {
    inject_workload(pod, settings, overrides, None)
}

/// [`inject`], the proxy told it serves `workload` (a template's object's name), or the
/// workload the pod's own metadata names ([`workload::name`]) when `None`.
pub fn inject_workload(
    pod: &mut Pod,
    settings: &Settings,
    overrides: &Overrides,
    workload: Option<&str>,
) -> Result<InjectStatus, InjectError> {
    let workload = workload
        .map(str::to_owned)
        .or_else(|| workload::name(&pod.metadata));
    let spec = pod.spec.as_mut().ok_or(InjectError::NoSpec)?;
    for (field, names) in [
        (
            "containers",
            spec.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
        ),
        (
            "initContainers",
            spec.init_containers
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect(),
        ),
    ] {
        if let Some(name) = names
            .iter()
            .find(|n| **n == INIT_CONTAINER || **n == PROXY_CONTAINER)
        {
            return Err(InjectError::NameTaken {
                field,
                name: (*name).to_owned(),
            });
        }
    }
    let app_ports = app_ports(&spec.containers)?;
    let added_volumes = volumes();
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| added_volumes.iter().any(|a| a.name == v.name))
    {
        return Err(InjectError::NameTaken {
            field: "volumes",
            name: v.name.clone(),
        });
    }
    let mut status = InjectStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        init_containers: vec![INIT_CONTAINER.into()],
        containers: Vec::new(),
        volumes: added_volumes.iter().map(|v| v.name.clone()).collect(),
        annotations: Vec::new(),
    };
    let mut proxy = proxy_container(settings, overrides, &app_ports);
    if let Some(workload) = workload {
        proxy.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: workload::WORKLOAD_ENV.into(),
            value: Some(workload),
            ..Default::default()
        });
    }
    let probes = rewrite(&mut spec.containers);
    if !probes.for_proxy.is_empty() {
        proxy.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: APP_PROBES_ENV.into(),
            value: Some(serde_json::to_string(&probes.for_proxy).unwrap_or_default()),
            ..Default::default()
        });
    }
    // braid-init first: everything after it is captured. Then, as a native sidecar,
    // the proxy, so the app's own init containers already have a working network.
    let mut inits = vec![init_container(settings, overrides)];
    if settings.native_sidecars {
        inits.push(proxy);
        status.init_containers.push(PROXY_CONTAINER.into());
    } else {
        spec.containers.insert(0, proxy);
        status.containers.push(PROXY_CONTAINER.into());
    }
    inits.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(inits);
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(added_volumes);
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    // A pod that has scrape annotations of its own (the app's metrics) keeps them as they
    // are: Prometheus's pod discovery reads one set per pod.
    let own = annotations.keys().any(|k| k.starts_with("prometheus.io/"));
    if !overrides.prometheus_opt_out && !own {
        for (key, value) in scrape_annotations() {
            annotations.insert(key.into(), value);
            status.annotations.push(key.into());
        }
    }
    // Serialising these plain structs cannot fail.
    let recorded = serde_json::to_string(&status).unwrap_or_default();
    annotations.insert(STATUS.into(), recorded);
    if !probes.originals.is_empty() {
        annotations.insert(
            ORIGINAL_PROBES.into(),
            serde_json::to_string(&probes.originals).unwrap_or_default(),
        );
    }
    Ok(status)
}

/// The TCP ports the app's containers declare, sorted and deduplicated; a port the proxy
/// needs is refused.
fn app_ports(
    containers: &[k8s_openapi::api::core::v1::Container],
) -> Result<Vec<u16>, InjectError> {
    let mut out = Vec::new();
    for c in containers {
        for p in c.ports.iter().flatten() {
            if let Some((_, what)) = braid_api::ports::PROXY_PORTS
                .iter()
                .find(|(port, _)| i32::from(*port) == p.container_port)
            {
                return Err(InjectError::ReservedPort {
                    container: c.name.clone(),
                    port: p.container_port,
                    what,
                });
            }
            let tcp = p.protocol.as_deref().is_none_or(|proto| proto == "TCP");
            if let (true, Ok(port)) = (tcp, u16::try_from(p.container_port)) {
                out.push(port);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The JSON patch that turns `before` into `after`.
pub fn patch(before: &Pod, after: &Pod) -> json_patch::Patch {
    let before = serde_json::to_value(before).unwrap_or_default();
    let after = serde_json::to_value(after).unwrap_or_default();
    json_patch::diff(&before, &after)
}

/// A container's requests and limits: an annotation's `cpu`/`memory` sets both request and
/// limit, else the defaults (`requests`, `limits`, each cpu then memory).
fn resources(
    cpu: Option<&String>,
    memory: Option<&String>,
    requests: (&String, &String),
    limits: (&String, &String),
) -> ResourceRequirements {
    let pair = |(default_cpu, default_memory): (&String, &String)| {
        Some(std::collections::BTreeMap::from([
            (
                "cpu".to_owned(),
                Quantity(cpu.unwrap_or(default_cpu).clone()),
            ),
            (
                "memory".to_owned(),
                Quantity(memory.unwrap_or(default_memory).clone()),
            ),
        ]))
    };
    ResourceRequirements {
        requests: pair(requests),
        limits: pair(limits),
        ..Default::default()
    }
}
