//! The install manifests (`kubectl apply -k manifests/`): every object is of a kind this
//! test knows and deserialises into its k8s-openapi type without losing a field (a typo
//! would otherwise vanish silently), kustomize renders exactly the files, and the pieces
//! fit together: the webhook fails closed and reaches the injector's Service, which
//! reaches its pods; the injector serves the certificate Secret the operator writes; one
//! image everywhere, the one the injector injects; hardened, budgeted, spread pods.
//!
//! It lives with the injector because the manifests are checked against the injector's
//! own defaults (mesh namespace, operator URL, proxy UID, image). `make manifests-check`
//! validates the same render against the Kubernetes API schemas.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use braid_injector::settings::Settings;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{Metadata, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const NS: &str = "braid-system";
const IMAGE_REPOSITORY: &str = "ghcr.io/braid-mesh/braid";
const OPERATOR: &str = "braid-operator";
const INJECTOR: &str = "braid-injector";
const INJECTOR_TLS_SECRET: &str = "braid-injector-tls";
/// `braid-injector serve`'s default --listen port.
const INJECTOR_PORT: i32 = 9443;

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// manifests/kustomization.yaml. Unknown fields are refused: this test reads the
/// resources from the files, which is only faithful while kustomize changes nothing but
/// what is modelled here (and `kustomize_renders_exactly_the_files` compares).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Kustomization {
    api_version: String,
    kind: String,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<ImageEntry>,
    #[serde(default)]
    configurations: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageEntry {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
    digest: Option<String>,
}

fn kustomization() -> Kustomization {
    let path = manifests_dir().join("kustomization.yaml");
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One YAML document of a resource file.
#[derive(Clone, Debug)]
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn id(&self) -> String {
        let v = &self.value;
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("");
        format!(
            "{} {} {ns}/{}",
            v["apiVersion"].as_str().unwrap_or("?"),
            v["kind"].as_str().unwrap_or("?"),
            v["metadata"]["name"].as_str().unwrap_or("?")
        )
    }
}

fn parse_documents(file: &str, text: &str) -> Vec<Doc> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| {
            let value = Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}"));
            Doc {
                file: file.to_string(),
                value,
            }
        })
        .filter(|d| !d.value.is_null())
        .collect()
}

/// Every document of every resource the kustomization lists, in its order (read once).
fn docs() -> Vec<Doc> {
    static DOCS: LazyLock<Vec<Doc>> = LazyLock::new(|| {
        kustomization()
            .resources
            .iter()
            .flat_map(|file| {
                let path = manifests_dir().join(file);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{} (listed in resources): {e}", path.display()));
                parse_documents(file, &text)
            })
            .collect()
    });
    DOCS.clone()
}

/// Deserialises `doc` as `T` and checks that serialising it back gives the document:
/// k8s-openapi ignores fields it does not know, so a misspelt field would otherwise pass.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Doc) -> T {
    let object: T = serde_json::from_value(doc.value.clone())
        .unwrap_or_else(|e| panic!("{} in {}: {e}", doc.id(), doc.file));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(difference) = difference(&doc.value, &back, "") {
        panic!(
            "{} in {}: {difference} (a field the type does not have?)",
            doc.id(),
            doc.file
        );
    }
    object
}

/// Where `a` and `b` differ, if they do. Numbers compare by value (1 == 1.0).
fn difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .find_map(|(key, u)| {
                let here = format!("{path}.{key}");
                match y.get(key) {
                    Some(v) => difference(u, v, &here),
                    None => Some(format!("{here} is lost")),
                }
            })
            .or_else(|| {
                y.keys()
                    .find(|key| !x.contains_key(*key))
                    .map(|key| format!("{path}.{key} appears"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| difference(u, v, &format!("{path}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} != {b}")),
    }
}

/// Every object of type `T`, checked like [`typed`].
fn objects<T: Resource + DeserializeOwned + serde::Serialize>() -> Vec<T> {
    docs()
        .iter()
        .filter(|d| d.value["apiVersion"] == T::API_VERSION && d.value["kind"] == T::KIND)
        .map(typed)
        .collect()
}

/// The object of type `T` named `name`.
fn named<T>(name: &str) -> T
where
    T: Resource + Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    T: DeserializeOwned + serde::Serialize,
{
    let mut found: Vec<T> = objects::<T>()
        .into_iter()
        .filter(|o| o.metadata().name.as_deref() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "one {} {name}", T::KIND);
    found.remove(0)
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn pod_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    let spec = deployment.spec.as_ref().unwrap();
    spec.template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn container<'a>(deployment: &'a Deployment, name: &str) -> &'a Container {
    pod_spec(deployment)
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("container {name}"))
}

fn env<'a>(container: &'a Container, name: &str) -> &'a k8s_openapi::api::core::v1::EnvVar {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{}: env {name}", container.name))
}

/// The container port a Service's or probe's `port` names or numbers.
fn resolve_port(container: &Container, port: &IntOrString) -> i32 {
    let ports = container.ports.iter().flatten();
    let found = match port {
        IntOrString::Int(n) => ports.clone().find(|p| p.container_port == *n),
        IntOrString::String(name) => ports.clone().find(|p| p.name.as_deref() == Some(name)),
    };
    found
        .unwrap_or_else(|| panic!("{}: no port {port:?}", container.name))
        .container_port
}

fn deployments() -> Vec<Deployment> {
    objects::<Deployment>()
}

#[test]
fn kustomization_lists_every_manifest_file() {
    let listed = kustomization().resources;
    let mut on_disk = Vec::new();
    let mut dirs = vec![manifests_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(manifests_dir()).unwrap().to_owned();
            if path.is_dir() {
                // Custom resources for users to try, and the optional PodMonitors
                // (monitoring.coreos.com): not part of the install.
                if relative != Path::new("examples") && relative != Path::new("monitoring") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "yaml") {
                on_disk.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let kustomize_files = ["kustomization.yaml", "kustomizeconfig.yaml"];
    for file in &on_disk {
        assert!(
            kustomize_files.contains(&file.as_str()) || listed.contains(file),
            "manifests/{file} is not in manifests/kustomization.yaml's resources \
             (a CRD that `make crds` added? list it there)"
        );
    }
    assert!(
        on_disk.iter().filter(|f| f.starts_with("crds/")).count() >= 3,
        "the CRDs: {on_disk:?}"
    );
    for file in &listed {
        assert!(on_disk.contains(file), "{file} is listed but missing");
    }
}

/// Every kind the install contains, each deserialised into its k8s-openapi type; any
/// other kind fails, so a new one is added here (and to manifests-check's schemas).
#[test]
fn every_object_is_a_known_kind_and_loses_no_field() {
    let docs = docs();
    for doc in &docs {
        let kind = (
            doc.value["apiVersion"].as_str().unwrap_or(""),
            doc.value["kind"].as_str().unwrap_or(""),
        );
        match kind {
            (Namespace::API_VERSION, Namespace::KIND) => drop(typed::<Namespace>(doc)),
            (ServiceAccount::API_VERSION, ServiceAccount::KIND) => {
                drop(typed::<ServiceAccount>(doc));
            }
            (ClusterRole::API_VERSION, ClusterRole::KIND) => drop(typed::<ClusterRole>(doc)),
            (ClusterRoleBinding::API_VERSION, ClusterRoleBinding::KIND) => {
                drop(typed::<ClusterRoleBinding>(doc));
            }
            (Role::API_VERSION, Role::KIND) => drop(typed::<Role>(doc)),
            (RoleBinding::API_VERSION, RoleBinding::KIND) => drop(typed::<RoleBinding>(doc)),
            (Deployment::API_VERSION, Deployment::KIND) => drop(typed::<Deployment>(doc)),
            (Service::API_VERSION, Service::KIND) => drop(typed::<Service>(doc)),
            (PodDisruptionBudget::API_VERSION, PodDisruptionBudget::KIND) => {
                drop(typed::<PodDisruptionBudget>(doc));
            }
            (MutatingWebhookConfiguration::API_VERSION, MutatingWebhookConfiguration::KIND) => {
                drop(typed::<MutatingWebhookConfiguration>(doc));
            }
            (CustomResourceDefinition::API_VERSION, CustomResourceDefinition::KIND) => {
                drop(typed::<CustomResourceDefinition>(doc));
            }
            other => panic!(
                "{} in {}: unknown kind {other:?}; add it to this test",
                doc.id(),
                doc.file
            ),
        }
    }
    let mut ids: Vec<String> = docs.iter().map(Doc::id).collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "an object is defined twice");
}

/// What `kubectl apply -k` sends is exactly the files: the kustomization only lists them
/// (and its images entry names the tag they already carry). Compared field by field,
/// which also catches a file kustomize reads differently (its v2, in kubectl 1.20, reads
/// YAML 1.1).
#[test]
fn kustomize_renders_exactly_the_files() {
    let Some(rendered) = kubectl_kustomize() else {
        return;
    };
    let rendered: BTreeMap<String, Doc> = parse_documents("(kubectl kustomize)", &rendered)
        .into_iter()
        .map(|d| (d.id(), d))
        .collect();
    let files: BTreeMap<String, Doc> = docs().into_iter().map(|d| (d.id(), d)).collect();
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>(),
        "kubectl kustomize renders other objects than the files hold"
    );
    for (id, file) in &files {
        if let Some(diff) = difference(&file.value, &rendered[id].value, "") {
            panic!(
                "{id} ({}): kubectl kustomize renders it differently: {diff}",
                file.file
            );
        }
    }
}

/// `kubectl kustomize manifests/`, or None (loudly) where kubectl is missing outside CI.
fn kubectl_kustomize() -> Option<String> {
    kubectl(&["kustomize".as_ref(), manifests_dir().as_os_str()])
}

/// `kubectl <args>`'s standard output; `None` (loudly, and a failure under CI=true) when
/// kubectl is missing.
fn kubectl(args: &[&std::ffi::OsStr]) -> Option<String> {
    let output = match Command::new("kubectl").args(args).output() {
        Ok(output) => output,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "kubectl is needed in CI to read manifests/ as kubectl does ({e}); .ci/run installs it"
            );
            // Straight to the process's stderr: the test harness captures eprintln!.
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n**********************************************************\n\
                 *  kubectl not found ({e}): manifests/ was NOT\n\
                 *  read with kubectl and compared with the files.\n\
                 **********************************************************\n"
            );
            return None;
        }
    };
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

/// kubectl reads files as YAML 1.1 (a bare `on` key is `true`, `0440` octal), serde and
/// kustomize v3+ as YAML 1.2. Every file, the generated CRDs included, must read the
/// same to kubectl as to the tests, or `kubectl apply -f` would install something else.
#[test]
fn every_file_reads_the_same_to_kubectl() {
    const MARK: &str = "braid.dev/yaml-check";
    for file in kustomization().resources {
        let path = manifests_dir().join(&file);
        let Some(json) = kubectl(&[
            "label".as_ref(),
            "--local".as_ref(),
            "-o".as_ref(),
            "json".as_ref(),
            "-f".as_ref(),
            path.as_os_str(),
            format!("{MARK}=1").as_ref(),
        ]) else {
            return;
        };
        // One JSON document per object, or a List.
        let mut objects: Vec<Value> = serde_json::Deserializer::from_str(&json)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .flat_map(|read| match read["kind"].as_str() {
                Some("List") => read["items"].as_array().cloned().unwrap_or_default(),
                _ => vec![read],
            })
            .collect();
        for object in &mut objects {
            let labels = object["metadata"]["labels"].as_object_mut().unwrap();
            labels.remove(MARK);
            if labels.is_empty() {
                object["metadata"].as_object_mut().unwrap().remove("labels");
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let files: Vec<Value> = parse_documents(&file, &text)
            .into_iter()
            .map(|d| d.value)
            .collect();
        assert_eq!(objects.len(), files.len(), "{file}");
        for (kubectl_read, serde_read) in objects.iter().zip(&files) {
            if let Some(diff) = difference(serde_read, kubectl_read, "") {
                panic!("manifests/{file}: kubectl reads it differently: {diff}");
            }
        }
    }
}

/// One image runs everything, tagged with the workspace version (what `make images`
/// builds), and it is the image the injector puts into pods.
#[test]
fn one_image_everywhere() {
    let image = format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"));
    let images = kustomization().images;
    assert_eq!(images.len(), 1, "{images:?}");
    let entry = &images[0];
    assert_eq!(entry.name, IMAGE_REPOSITORY);
    assert_eq!(entry.new_name, None, "retag in a copy of the kustomization");
    assert_eq!(entry.digest, None);
    assert_eq!(
        entry.new_tag.as_deref(),
        Some(env!("CARGO_PKG_VERSION")),
        "the tag make images builds"
    );
    let deployments = deployments();
    assert_eq!(deployments.len(), 2);
    for d in &deployments {
        let spec = pod_spec(d);
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            assert_eq!(c.image.as_deref(), Some(image.as_str()), "{}", c.name);
            assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        }
    }
    let injector = named::<Deployment>(INJECTOR);
    let injected = env(container(&injector, "injector"), "BRAID_PROXY_IMAGE");
    assert_eq!(injected.value.as_deref(), Some(image.as_str()));
    assert!(
        Settings::default()
            .image
            .starts_with(&format!("{IMAGE_REPOSITORY}:")),
        "the injector's default image is of the same repository"
    );
}

#[test]
fn the_webhook_fails_closed_and_reaches_the_injector() {
    let config = named::<MutatingWebhookConfiguration>(INJECTOR);
    let hooks = config.webhooks.unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.name, "inject.braid.dev");
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.side_effects, "None");
    assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert!(
        hook.timeout_seconds.is_some_and(|t| (1..=10).contains(&t)),
        "{:?}",
        hook.timeout_seconds
    );
    assert_eq!(hook.admission_review_versions, ["v1"]);

    let rules = hook.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(
        rule.operations.as_deref(),
        Some(&["CREATE".to_string()][..])
    );
    assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_string()][..]));
    assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));

    // Labelled namespaces only, never kube-system or the mesh's own.
    let selector = hook.namespace_selector.as_ref().unwrap();
    let labels = selector.match_labels.as_ref().unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels["braid.dev/inject"], "enabled");
    let excluded = selector
        .match_expressions
        .iter()
        .flatten()
        .find(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .and_then(|e| e.values.clone())
        .unwrap_or_default();
    for ns in ["kube-system", Settings::default().mesh_namespace.as_str()] {
        assert!(excluded.iter().any(|x| x == ns), "{ns} excluded");
    }

    // The operator patches caBundle; the manifest never sets it, so re-applying keeps it.
    let client = &hook.client_config;
    assert_eq!(client.ca_bundle, None);
    assert_eq!(client.url, None);
    let target = client.service.as_ref().unwrap();
    assert_eq!(
        (target.namespace.as_str(), target.name.as_str()),
        (NS, INJECTOR)
    );
    assert_eq!(target.path.as_deref(), Some("/inject"));
    let port = target.port.unwrap_or(443);
    assert_eq!(port, 443);

    // Service port 443 → the injector container's port.
    let service = named::<Service>(INJECTOR);
    assert_eq!(service.metadata.namespace.as_deref(), Some(NS));
    let service_port = service
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == port)
        .expect("the Service exposes the webhook's port");
    let deployment = named::<Deployment>(INJECTOR);
    let target_port = service_port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(port));
    assert_eq!(
        resolve_port(container(&deployment, "injector"), &target_port),
        INJECTOR_PORT
    );
}

/// The Deployment `name`, checked to run two replicas of the binary `name` in its
/// container `container_name`.
fn two_replicas_of(name: &str, container_name: &str) -> Deployment {
    let deployment = named::<Deployment>(name);
    assert_eq!(
        deployment.spec.as_ref().unwrap().replicas,
        Some(2),
        "{name}"
    );
    let c = container(&deployment, container_name);
    assert_eq!(c.command.as_deref(), Some(&[name.to_string()][..]));
    deployment
}

#[test]
fn the_injector_serves_the_certificate_the_operator_writes() {
    let deployment = two_replicas_of(INJECTOR, "injector");
    let pod = pod_spec(&deployment);
    let c = container(&deployment, "injector");
    let args = c.args.clone().unwrap();
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    let flag = |name: &str| {
        let at = args.iter().position(|a| a == name).expect(name);
        PathBuf::from(&args[at + 1])
    };
    let (cert, key) = (flag("--tls-cert"), flag("--tls-key"));

    // Both files come from the Secret, which the pod waits for (not optional).
    for file in [&cert, &key] {
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| file.parent() == Some(Path::new(&m.mount_path)))
            .unwrap_or_else(|| panic!("{} is mounted", file.display()));
        assert_eq!(mount.read_only, Some(true));
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        let secret = volume.secret.as_ref().expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some(INJECTOR_TLS_SECRET));
        assert_ne!(secret.optional, Some(true));
        // tls.crt / tls.key: the keys of a kubernetes.io/tls Secret.
        let key_name = file.file_name().unwrap().to_str().unwrap();
        assert!(["tls.crt", "tls.key"].contains(&key_name), "{key_name}");
    }

    // Probes: /healthz over HTTPS on the webhook's port.
    for probe in [&c.startup_probe, &c.liveness_probe, &c.readiness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        assert_eq!(resolve_port(c, &get.port), INJECTOR_PORT);
    }

    // Its ServiceAccount exists; the token is mounted for GET /version.
    assert_eq!(pod.service_account_name.as_deref(), Some(INJECTOR));
    let account = named::<ServiceAccount>(INJECTOR);
    assert_eq!(account.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(account.automount_service_account_token, Some(true));
    assert_eq!(pod.automount_service_account_token, Some(true));
}

#[test]
fn the_operator_runs_elected_replicas_behind_its_stream_service() {
    let deployment = two_replicas_of(OPERATOR, "operator");
    let pod = pod_spec(&deployment);
    let c = container(&deployment, "operator");
    assert_eq!(
        c.args.as_deref(),
        Some(&["--source".into(), "kube".into()][..])
    );
    assert!(
        c.volume_mounts.is_none(),
        "certificates come from Secret braid-ca"
    );

    // Leader election: each replica's identity and namespace from the downward API.
    for (name, field) in [
        ("BRAID_POD_NAME", "metadata.name"),
        ("BRAID_NAMESPACE", "metadata.namespace"),
    ] {
        let from = env(c, name).value_from.as_ref().unwrap();
        assert_eq!(from.field_ref.as_ref().unwrap().field_path, field, "{name}");
    }
    // Memory a change frees goes back to the system at once (bench-scale runs the same).
    assert_eq!(env(c, "MIMALLOC_PURGE_DELAY").value.as_deref(), Some("0"));

    // Probes on the plain-HTTP admin port.
    let admin = IntOrString::Int(9090);
    for (probe, path) in [
        (&c.startup_probe, "/healthz"),
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_ne!(get.scheme.as_deref(), Some("HTTPS"));
        assert_eq!(resolve_port(c, &get.port), resolve_port(c, &admin));
    }

    // The Service proxies reach: the injector's default --operator-url.
    let url = Settings::default().operator_url;
    let authority = url.strip_prefix("https://").unwrap();
    let (host, port) = authority.split_once(':').unwrap();
    assert_eq!(host, format!("{OPERATOR}.{NS}.svc"));
    let port: i32 = port.parse().unwrap();
    let service = named::<Service>(OPERATOR);
    assert_eq!(service.metadata.namespace.as_deref(), Some(NS));
    let ports = service.spec.unwrap().ports.unwrap();
    for (port, container_port) in [(port, 8443), (9090, 9090)] {
        let p = ports.iter().find(|p| p.port == port).expect("port");
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(port));
        assert_eq!(resolve_port(c, &target), container_port);
    }

    assert_eq!(pod.service_account_name.as_deref(), Some(OPERATOR));
    assert_eq!(
        named::<ServiceAccount>(OPERATOR)
            .metadata
            .namespace
            .as_deref(),
        Some(NS)
    );
}

/// Services and PodDisruptionBudgets select exactly one Deployment's pods, and a budget
/// of one leaves room to drain a node.
#[test]
fn services_and_budgets_select_their_deployments() {
    let deployments = deployments();
    let selects = |selector: &BTreeMap<String, String>| -> Vec<String> {
        deployments
            .iter()
            .filter(|d| {
                let labels = pod_labels(d);
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|d| d.metadata.name.clone().unwrap())
            .collect()
    };
    for service in objects::<Service>() {
        let name = service.metadata.name.clone().unwrap();
        let selector = service.spec.unwrap().selector.unwrap();
        assert!(!selector.is_empty());
        assert_eq!(
            selects(&selector),
            std::slice::from_ref(&name),
            "Service {name}"
        );
    }
    let budgets = objects::<PodDisruptionBudget>();
    assert_eq!(
        budgets.len(),
        deployments.len(),
        "one budget per Deployment"
    );
    for pdb in budgets {
        let name = pdb.metadata.name.clone().unwrap();
        let spec = pdb.spec.unwrap();
        let selector = spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(
            selects(&selector),
            std::slice::from_ref(&name),
            "PDB {name}"
        );
        assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
        let replicas = named::<Deployment>(&name).spec.unwrap().replicas.unwrap();
        assert!(replicas > 1, "{name}: {replicas} replicas");
    }
    for d in &deployments {
        let spec = d.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.clone().unwrap();
        assert!(
            selector
                .iter()
                .all(|(k, v)| pod_labels(d).get(k) == Some(v))
        );
    }
}

/// Pod Security "restricted", requests and limits, probes, replicas spread over nodes.
#[test]
fn pods_are_hardened_budgeted_and_spread() {
    let proxy_uid = Settings::default().proxy_uid;
    for d in deployments() {
        let name = d.metadata.name.clone().unwrap();
        let pod = pod_spec(&d);
        let security = pod.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_non_root, Some(true), "{name}");
        let uid = security.run_as_user.unwrap();
        assert!(uid != 0 && uid != proxy_uid, "{name}: UID {uid}");
        assert_eq!(
            security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault",
            "{name}"
        );
        assert!(pod.host_network.is_none() && pod.host_pid.is_none());
        for v in pod.volumes.iter().flatten() {
            assert!(
                v.secret.is_some() || v.empty_dir.is_some() || v.projected.is_some(),
                "{name}: volume {}",
                v.name
            );
        }
        for c in &pod.containers {
            let s = c.security_context.as_ref().unwrap();
            assert_eq!(s.allow_privilege_escalation, Some(false), "{name}");
            assert_eq!(s.read_only_root_filesystem, Some(true), "{name}");
            assert_ne!(s.privileged, Some(true), "{name}");
            let caps = s.capabilities.as_ref().unwrap();
            assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
            assert!(caps.add.is_none(), "{name}");
            let resources = c.resources.as_ref().unwrap();
            for (what, list) in [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ] {
                let list = list.as_ref().unwrap_or_else(|| panic!("{name}: {what}"));
                for r in ["cpu", "memory"] {
                    assert!(list.contains_key(r), "{name}: {what}.{r}");
                }
            }
            assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
        }
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_else(|| panic!("{name}: preferred anti-affinity"));
        let term = &anti[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let selector = term.label_selector.clone().unwrap().match_labels.unwrap();
        assert!(
            selector
                .iter()
                .all(|(k, v)| pod_labels(&d).get(k) == Some(v)),
            "{name}: anti-affinity against its own replicas"
        );
    }
}

#[test]
fn everything_lives_in_braid_system() {
    let namespace = named::<Namespace>(NS);
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert!(
        !labels.contains_key("braid.dev/inject"),
        "the mesh's own namespace is never injected"
    );
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    assert_eq!(Settings::default().mesh_namespace, NS);
    let cluster_scoped = [
        Namespace::KIND,
        ClusterRole::KIND,
        ClusterRoleBinding::KIND,
        MutatingWebhookConfiguration::KIND,
        CustomResourceDefinition::KIND,
    ];
    for doc in docs() {
        let ns = doc.value["metadata"]["namespace"].as_str();
        if cluster_scoped.contains(&doc.value["kind"].as_str().unwrap()) {
            assert_eq!(ns, None, "{}", doc.id());
        } else {
            assert_eq!(ns, Some(NS), "{} in {}", doc.id(), doc.file);
        }
    }
}

/// kubectl reads manifest files as YAML 1.1, where a bare `on`, `off`, `yes`, `no`, `y`
/// or `n` is a boolean and `0440` is octal; serde and kustomize v3+ read YAML 1.2. The
/// hand-written manifests avoid all of them so every reader agrees. (crds/ is crdgen's
/// output and is not checked here.)
#[test]
fn hand_written_manifests_read_the_same_in_yaml_1_1() {
    const AMBIGUOUS: [&str; 6] = ["y", "n", "yes", "no", "on", "off"];
    for file in kustomization()
        .resources
        .iter()
        .filter(|f| !f.starts_with("crds/"))
    {
        let text = std::fs::read_to_string(manifests_dir().join(file)).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Strip a comment: `#` at the start or after a space.
            let code = match line.find(" #") {
                Some(at) => &line[..at],
                None if line.trim_start().starts_with('#') => "",
                None => line,
            };
            let tokens = code
                .split(|c: char| "[]{},".contains(c) || c.is_whitespace())
                .flat_map(|t| t.split(':'))
                .map(|t| t.trim_matches(|c: char| c == '-' || c.is_whitespace()))
                .filter(|t| !t.is_empty());
            for token in tokens {
                let lower = token.to_ascii_lowercase();
                let octal = token.len() > 1
                    && token.starts_with('0')
                    && token.chars().all(|c| c.is_ascii_digit());
                assert!(
                    !AMBIGUOUS.contains(&lower.as_str()) && !octal,
                    "manifests/{file}:{}: {token} reads differently in YAML 1.1; quote it \
                     (or write the number in decimal)",
                    n + 1
                );
            }
        }
    }
}

/// The optional PodMonitors scrape what the proxies, the operator and the injector serve:
/// the sidecar's named health port and scrape path as the injector writes them, the
/// operator's and the injector's metrics ports by their names; and their pod templates
/// point annotation-based discovery at the same ports.
#[test]
fn the_pod_monitors_and_scrape_annotations_match_what_is_served() {
    let text =
        std::fs::read_to_string(manifests_dir().join("monitoring/podmonitors.yaml")).unwrap();
    let monitors: Vec<Value> = parse_documents("monitoring/podmonitors.yaml", &text)
        .into_iter()
        .map(|d| d.value)
        .collect();
    assert_eq!(monitors.len(), 3);
    let endpoint = |name: &str| {
        let m = monitors
            .iter()
            .find(|m| m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no PodMonitor {name}"));
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["kind"], "PodMonitor");
        m["spec"]["podMetricsEndpoints"][0].clone()
    };

    let sidecar = braid_injector::inject::proxy_container(
        &Settings::default(),
        &braid_injector::annotations::Overrides::default(),
        &[],
    );
    let health = sidecar
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == i32::from(braid_api::ports::HEALTH_PORT))
        .expect("the sidecar declares its health port");
    let proxies = endpoint("braid-proxies");
    assert_eq!(proxies["port"].as_str(), health.name.as_deref());
    assert_eq!(proxies["path"], braid_api::ports::SCRAPE_PATH);

    // The operator's and the injector's own metrics: each PodMonitor names a port of
    // the Deployment's container, and the pod template's annotations point there too.
    for (name, container_name) in [(OPERATOR, "operator"), (INJECTOR, "injector")] {
        let deployment: Deployment = named(name);
        let port = container(&deployment, container_name)
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == endpoint(name)["port"].as_str())
            .unwrap_or_else(|| panic!("the {name} PodMonitor names one of its container ports"));
        let annotations = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(
            annotations["prometheus.io/port"],
            port.container_port.to_string(),
            "{name}"
        );
        assert_eq!(
            annotations["prometheus.io/path"],
            endpoint(name)["path"],
            "{name}"
        );
    }
}
