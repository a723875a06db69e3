//! `braid-proxy`: the sidecar, as a native sidecar or as the first container.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::volumes::{OPERATOR_CA_DIR, RUN_DIR, TOKEN_DIR, mounts};
use crate::annotations::Overrides;
use crate::annotations::telemetry::{
    self, ACCESS_LOG_ENV, TRACE_COLLECTOR_ENV, TRACE_SAMPLING_ENV,
};
use crate::settings::Settings;

/// The sidecar's name.
pub const PROXY_CONTAINER: &str = "braid-proxy";
/// The proxy's health port (kubelet probes), as a container port.
pub const HEALTH_PORT: i32 = braid_api::ports::HEALTH_PORT as i32;

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn ready_probe(period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/ready".into()),
            port: IntOrString::Int(HEALTH_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The `braid-proxy` container: `braid-proxy supervise` runs the proxy as its child, so
/// `braid-proxy upgrade` can replace the proxy without restarting the container. As a
/// native sidecar its startup probe holds back the
/// app's containers until the proxy is ready, and the kubelet stops it only after they
/// have exited. Otherwise a `postStart` hook does the first, and a `preStop` hook that
/// waits for the app (watching `app_ports`, the ports the app declares) the second.
pub fn proxy_container(settings: &Settings, overrides: &Overrides, app_ports: &[u16]) -> Container {
    let resources = super::resources(
        overrides.proxy_cpu.as_ref(),
        overrides.proxy_memory.as_ref(),
        (&settings.cpu_request, &settings.memory_request),
        (&settings.cpu_limit, &settings.memory_limit),
    );
    let log_level = overrides
        .log_level
        .clone()
        .unwrap_or_else(|| settings.log_level.clone());
    // Observability: the pod's annotation, else the injector's setting, each in the
    // normal form the proxy reads (`5%` is `5`, `http://otel/` is `http://otel:4318`).
    // The access log and sampling are always written (the proxy's defaults may change,
    // the mesh's should not); the collector only when there is one, as the proxy exports
    // nothing without it: a pod's `off` turns off the injector's.
    let access_log = telemetry::proxy_env(
        telemetry::access_log,
        overrides
            .access_log
            .as_ref()
            .unwrap_or(&settings.access_log),
    );
    let trace_sampling = telemetry::proxy_env(
        telemetry::trace_sampling,
        overrides
            .trace_sampling
            .as_ref()
            .unwrap_or(&settings.trace_sampling),
    );
    let trace_collector = overrides
        .trace_collector
        .as_ref()
        .or(settings.trace_collector.as_ref())
        .and_then(|setting| telemetry::collector_env(setting));
    let mut container = Container {
        name: PROXY_CONTAINER.into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["braid-proxy".into()]),
        args: Some(vec![
            "supervise".into(),
            "--dir".into(),
            RUN_DIR.into(),
            "--".into(),
            "--operator".into(),
            settings.operator_url.clone(),
            "--operator-ca".into(),
            format!("{OPERATOR_CA_DIR}/ca.crt"),
            "--token-file".into(),
            format!("{TOKEN_DIR}/token"),
        ]),
        env: Some(
            vec![
                field_env("BRAID_POD_NAME", "metadata.name"),
                field_env("BRAID_POD_NAMESPACE", "metadata.namespace"),
                field_env("BRAID_POD_IP", "status.podIP"),
                field_env("BRAID_SERVICE_ACCOUNT", "spec.serviceAccountName"),
                value_env("BRAID_LOG_LEVEL", log_level),
                value_env(ACCESS_LOG_ENV, access_log),
                value_env(TRACE_SAMPLING_ENV, trace_sampling),
            ]
            .into_iter()
            .chain(trace_collector.map(|url| value_env(TRACE_COLLECTOR_ENV, url)))
            // The limits the pod tuned, each in its flag's variable.
            .chain(overrides.proxy_limits.iter().map(|l| EnvVar {
                name: l.env.into(),
                value: Some(l.value.clone()),
                ..Default::default()
            }))
            .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some("braid-health".into()),
            container_port: HEALTH_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(ready_probe(5, 3)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_user: Some(settings.proxy_uid),
            run_as_group: Some(settings.proxy_uid),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts()),
        ..Default::default()
    };
    if settings.native_sidecars {
        container.restart_policy = Some("Always".into());
        // Up to two minutes for a first config; the app starts only after.
        container.startup_probe = Some(ready_probe(1, 120));
    } else {
        let exec = |command: Vec<String>| LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(command),
            }),
            ..Default::default()
        };
        let mut wait_app_exit = vec!["braid-proxy".to_owned(), "wait-app-exit".into()];
        if !app_ports.is_empty() {
            let ports: Vec<String> = app_ports.iter().map(u16::to_string).collect();
            wait_app_exit.extend(["--app-ports".into(), ports.join(",")]);
        }
        container.lifecycle = Some(Lifecycle {
            post_start: Some(exec(vec!["braid-proxy".into(), "wait-ready".into()])),
            // The pod's grace period bounds this wait; the kubelet's SIGTERM then drains
            // a proxy that no longer carries anything.
            pre_stop: Some(exec(wait_app_exit)),
        });
    }
    container
}
