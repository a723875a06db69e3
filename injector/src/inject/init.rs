//! `braid-init`: installs the pod's capture rules, then exits. It needs root and
//! NET_ADMIN/NET_RAW for iptables, and nothing else.

use k8s_openapi::api::core::v1::{Capabilities, Container, SecurityContext};

use crate::annotations::Overrides;
use crate::settings::Settings;

/// The init container's name.
pub const INIT_CONTAINER: &str = "braid-init";

/// The `braid-proxy iptables` arguments for a pod; the e2e harness runs exactly these.
pub fn iptables_args(settings: &Settings, overrides: &Overrides) -> Vec<String> {
    let mut args = vec![
        "iptables".to_owned(),
        "--proxy-uid".into(),
        settings.proxy_uid.to_string(),
        "--proxy-gid".into(),
        settings.proxy_uid.to_string(),
    ];
    let join = |ports: &[u16]| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if !overrides.exclude_inbound_ports.is_empty() {
        args.extend([
            "--exclude-inbound-ports".into(),
            join(&overrides.exclude_inbound_ports),
        ]);
    }
    if !overrides.exclude_outbound_ports.is_empty() {
        args.extend([
            "--exclude-outbound-ports".into(),
            join(&overrides.exclude_outbound_ports),
        ]);
    }
    if !overrides.exclude_outbound_cidrs.is_empty() {
        args.extend([
            "--exclude-outbound-cidrs".into(),
            overrides.exclude_outbound_cidrs.join(","),
        ]);
    }
    args
}

/// The `braid-init` container. It has requests and limits of its own: in a namespace
/// with a ResourceQuota on CPU or memory and no LimitRange to default them, the API
/// server refuses every pod with a container that has none.
pub fn init_container(settings: &Settings, overrides: &Overrides) -> Container {
    // An annotation sets request and limit, as the proxy's do.
    let resources = super::resources(
        overrides.init_cpu.as_ref(),
        overrides.init_memory.as_ref(),
        (&settings.init_cpu_request, &settings.init_memory_request),
        (&settings.init_cpu_limit, &settings.init_memory_limit),
    );
    Container {
        resources: Some(resources),
        name: INIT_CONTAINER.into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["braid-proxy".into()]),
        args: Some(iptables_args(settings, overrides)),
        security_context: Some(SecurityContext {
            // iptables needs root and these two capabilities; a failure exits non-zero,
            // so the pod fails visibly rather than running uncaptured.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
