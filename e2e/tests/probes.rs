//! End-to-end: kubelet's probes judge a meshed pod exactly as they judge the same pod
//! unmeshed, for every probe kind the injector takes over (tcpSocket, HTTP, HTTPS,
//! gRPC) and in every link-encryption mode. A kubelet-like prober stands in the hub
//! namespace (outside every pod, as a node does) and performs each container's probes
//! as the pod spec says: the injector's rewrite of it for the meshed pod, the original
//! for the unmeshed twin; and with an AccessPolicy refusing every caller, whose refusals
//! never reach the probes. Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_e2e::{Mesh, Pod, ProxyFlags, shop};
use braid_injector::inject::{APP_PROBES_ENV, PROXY_CONTAINER, inject};
use k8s_openapi::api::core::v1::Pod as PodSpec;

/// The app: one pod, three containers (sharing the pod's network), probes of each kind
/// aimed at servers that pass and servers that fail.
const POD: &str = "
apiVersion: v1
kind: Pod
metadata: {generateName: probed-, namespace: shop, labels: {app: probed}}
spec:
  serviceAccountName: probed
  containers:
  - name: tcp
    image: example/app:1
    ports: [{name: web, containerPort: 8080}]
    readinessProbe: {tcpSocket: {port: 9999}}
    livenessProbe: {tcpSocket: {port: web}}
    startupProbe: {httpGet: {path: /, port: web}}
  - name: tls
    image: example/app:1
    ports: [{name: https, containerPort: 9443}]
    readinessProbe: {httpGet: {scheme: HTTPS, path: /healthz, port: https}}
    livenessProbe: {httpGet: {scheme: HTTPS, path: /fail, port: 9443}}
  - name: grpc
    image: example/app:1
    ports: [{containerPort: 9090}, {containerPort: 9091}]
    readinessProbe: {grpc: {port: 9090}}
    livenessProbe: {grpc: {port: 9091, service: shop.Payments}}
    startupProbe: {grpc: {port: 9090, service: shop.Unknown}}
";

/// What kubelet concludes of the unmeshed pod: the servers' own answers.
const EXPECTED: [(&str, bool); 8] = [
    ("tcp/liveness", true),   // 8080 listens
    ("tcp/readiness", false), // nothing on 9999
    ("tcp/startup", true),    // plain HTTP 200
    ("tls/liveness", false),  // HTTPS 500
    ("tls/readiness", true),  // HTTPS 200, self-signed certificate
    ("grpc/liveness", false), // NOT_SERVING
    ("grpc/readiness", true), // SERVING
    ("grpc/startup", false),  // NOT_FOUND: a service the server does not know
];

fn registry(pod: &Pod) -> String {
    format!(
        "services: []\nworkloads:\n- {{name: {n}, namespace: shop, ips: [{ip}], labels: {{app: probed}}, serviceAccount: {n}}}\n",
        n = pod.name,
        ip = pod.ip,
    )
}

/// Starts the app's servers in `pod` (the same in the meshed and the unmeshed one).
fn start_apps(pod: &mut Pod) {
    pod.spawn_app(
        "http",
        &["http-server", "--port", "8080", "--name", "probed"],
    )
    .unwrap();
    pod.spawn_app("https", &["https-server", "--port", "9443"])
        .unwrap();
    for (label, port, status) in [
        ("grpc-serving", "9090", "SERVING"),
        ("grpc-not-serving", "9091", "NOT_SERVING"),
    ] {
        pod.spawn_app(
            label,
            &[
                "grpc-health-server",
                "--port",
                port,
                "--status",
                status,
                "--service",
                "shop.Payments",
            ],
        )
        .unwrap();
    }
    for port in [8080, 9443, 9090, 9091] {
        pod.wait_listening(port).unwrap();
    }
}

/// The prober's verdicts on `pod` (as its spec says) at `target`'s address:
/// `<container>/<kind>` → `success` or `failure <why>`.
fn verdicts(mesh: &Mesh, pod: &PodSpec, target: &Pod) -> Vec<(String, String)> {
    let json = serde_json::to_string(pod).unwrap();
    let out = mesh
        .hub_app(&["probe", "--ip", &target.ip.to_string(), "--pod", &json])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lines: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let (probe, verdict) = l.split_once(' ').unwrap_or((l, ""));
            (probe.to_owned(), verdict.to_owned())
        })
        .collect();
    lines.sort();
    lines
}

/// The inbound TLS mode in `pod`'s proxy (`Disabled` when absent).
fn inbound_tls(pod: &Pod) -> String {
    let dump = pod.config_dump().unwrap();
    dump["inbound"]["tls"]["mode"]
        .as_str()
        .unwrap_or("Disabled")
        .to_owned()
}

#[test]
fn a_meshed_pods_probes_judge_like_the_unmeshed_pods_in_every_tls_mode() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut meshed = mesh.pod("probed").unwrap();
    let mut plain = mesh.pod("plain").unwrap();
    mesh.start_operator(&registry(&meshed))
        .unwrap_or_else(|e| panic!("{e}"));
    let op = mesh.operator().unwrap();

    // The injector's change, as the webhook makes it.
    let original: PodSpec = serde_norway::from_str(POD).unwrap();
    let mut injected = original.clone();
    inject(
        &mut injected,
        &braid_injector::settings::Settings::default(),
        &Default::default(),
    )
    .unwrap();
    let spec = injected.spec.as_ref().unwrap();
    let proxy = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)
        .unwrap();
    let app_probes: Vec<(String, String)> = proxy
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == APP_PROBES_ENV)
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();

    meshed.capture(&ProxyFlags::default()).unwrap();
    meshed
        .start_sidecar_streaming_with_env(op, &app_probes)
        .unwrap_or_else(|e| panic!("{e}"));
    start_apps(&mut meshed);
    start_apps(&mut plain);

    let mut expected: Vec<(String, bool)> = EXPECTED
        .iter()
        .map(|(p, ok)| ((*p).to_owned(), *ok))
        .collect();
    expected.sort();
    let mut mismatches = Vec::new();
    for mode in ["Disabled", "Permissive", "Strict"] {
        if mode != "Disabled" {
            op.write_resource(
                "tls.yaml",
                &format!(
                    "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {{name: probed, namespace: shop}}\nspec: {{selector: {{matchLabels: {{app: probed}}}}, mode: {mode}, rollout: {{percent: 100}}}}\n"
                ),
            )
            .unwrap();
        }
        shop::wait_until(&format!("the meshed pod to be {mode}"), 15, || {
            inbound_tls(&meshed) == mode
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let unmeshed = verdicts(&mesh, &original, &plain);
        let judged: Vec<(String, bool)> = unmeshed
            .iter()
            .map(|(p, v)| (p.clone(), v == "success"))
            .collect();
        assert_eq!(
            judged, expected,
            "the unmeshed pod is judged by its servers' answers ({mode}): {unmeshed:#?}"
        );
        let with_mesh = verdicts(&mesh, &injected, &meshed);
        for ((probe, want), (_, got)) in unmeshed.iter().zip(&with_mesh) {
            if (want == "success") != (got == "success") {
                mismatches.push(format!("{mode} {probe}: unmeshed {want:?}, meshed {got:?}"));
            }
        }
        assert_eq!(
            with_mesh.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            unmeshed.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
    }
    assert!(
        mismatches.is_empty(),
        "kubelet would judge the meshed pod differently:\n{}\nsidecar log:\n{}",
        mismatches.join("\n"),
        meshed.log("sidecar")
    );

    // An AccessPolicy refusing every caller of the app's ports: probes, rewritten to the
    // proxy's health port, are judged as before, and the proxy's own ports still answer.
    op.write_resource(
        "tls.yaml",
        "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: probed, namespace: shop}\nspec: {selector: {matchLabels: {app: probed}}, mode: Permissive, rollout: {percent: 100}}\n---\napiVersion: braid.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {selector: {matchLabels: {app: probed}}, action: Deny, mode: Enforce, rules: [{}]}\n",
    )
    .unwrap();
    let direct = format!("{}:8080", meshed.ip);
    shop::wait_until(
        "the deny-all policy to refuse the app's callers",
        15,
        || {
            plain.app(&["get", &direct]).unwrap_or_default().trim()
                == "403 denied by AccessPolicy shop/deny-all"
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let judged = |v: Vec<(String, String)>| -> Vec<(String, bool)> {
        v.into_iter().map(|(p, v)| (p, v == "success")).collect()
    };
    assert_eq!(
        judged(verdicts(&mesh, &injected, &meshed)),
        expected,
        "an AccessPolicy changed kubelet's verdicts; sidecar log:\n{}",
        meshed.log("sidecar")
    );
    assert!(
        meshed
            .metrics()
            .unwrap()
            .contains("braid_authz_decisions_total")
    );
}
