//! Checks of braid's install: its CRDs established and this release's, the operator and
//! the injector ready (and with a spare), one operator replica leading, the webhook
//! reachable with a valid caBundle, and the CA and the webhook's certificate in date.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::certs::{Bundle, expiries, timestamp};
use super::finding::Finding;
use super::kubernetes::list;
use super::snapshot::{Read, Snapshot, is_forbidden};

/// The heading of the CRD checks.
pub const CRDS: &str = "braid's resources (CRDs)";
/// The heading of the operator's and the injector's checks.
pub const CONTROL_PLANE: &str = "Control plane";
/// The heading of the webhook's and the certificates' checks.
pub const CERTIFICATES: &str = "Webhook and certificates";
/// The fix for anything missing from the install.
pub const INSTALL: &str =
    "install this release: braidctl install --render | kubectl apply --server-side -f -";
/// The operator's Deployment.
pub const OPERATOR: &str = "braid-operator";
/// The injector's Deployment, Service and webhook configuration.
pub const INJECTOR: &str = "braid-injector";
/// The CA's Secret.
pub const CA_SECRET: &str = "braid-ca";
/// The injector's serving certificate's Secret.
pub const WEBHOOK_SECRET: &str = "braid-injector-tls";
/// Less than this left on the CA is warned about, as the operator warns in its log.
pub const CA_WARN_LEFT: Duration = Duration::from_secs(30 * 24 * 3600);

/// This release's CRDs.
pub fn release_crds() -> Vec<CustomResourceDefinition> {
    crate::manifests::documents()
        .into_iter()
        .filter(|(_, d)| d["kind"] == "CustomResourceDefinition")
        .filter_map(|(_, d)| serde_json::from_value(d).ok())
        .collect()
}

/// Why `installed` is not `release`'s CRD: a version it lacks or whose schema differs.
pub fn differs(
    installed: &CustomResourceDefinition,
    release: &CustomResourceDefinition,
) -> Option<String> {
    for want in &release.spec.versions {
        let Some(have) = installed.spec.versions.iter().find(|v| v.name == want.name) else {
            return Some(format!("it does not serve version {}", want.name));
        };
        let schema = |v: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion| {
            serde_json::to_value(&v.schema).unwrap_or_default()
        };
        if schema(have) != schema(want) {
            return Some(format!(
                "version {}'s schema is not this release's: the API server accepts or refuses other fields than the operator reads",
                want.name
            ));
        }
    }
    None
}

/// Each of this release's CRDs is installed, established and current.
pub fn crds(snap: &Snapshot) -> Vec<Finding> {
    let mut found = Vec::new();
    for release in release_crds() {
        let name = release.metadata.name.clone().unwrap_or_default();
        let installed = snap.crds.iter().find(|(n, _)| *n == name).map(|(_, c)| c);
        let crd = match installed {
            Some(Ok(Some(crd))) => crd,
            Some(Ok(None)) | None => {
                found.push(Finding::fail(
                    CRDS,
                    format!("CRD {name} is not installed"),
                    INSTALL,
                ));
                continue;
            }
            Some(Err(e)) => {
                found.push(Finding::unread(
                    CRDS,
                    &format!("CRD {name}"),
                    e,
                    format!("kubectl get crd {name}"),
                    "get customresourcedefinitions",
                ));
                continue;
            }
        };
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Established"));
        if established.is_none_or(|c| c.status != "True") {
            let why = established
                .and_then(|c| c.message.clone())
                .unwrap_or_else(|| "no Established condition".into());
            found.push(
                Finding::fail(
                    CRDS,
                    format!("CRD {name} is not established: {why}"),
                    format!("kubectl describe crd {name}"),
                )
                .meaning("the API server does not serve the resource yet: applying one fails"),
            );
            continue;
        }
        match differs(crd, &release) {
            Some(why) => found.push(
                Finding::fail(
                    CRDS,
                    format!(
                        "CRD {name} is not this release's ({})",
                        env!("CARGO_PKG_VERSION")
                    ),
                    INSTALL,
                )
                .meaning(why),
            ),
            None => found.push(Finding::pass(
                CRDS,
                format!("CRD {name} is established and current"),
            )),
        }
    }
    found
}

/// The image a Deployment's first container runs.
pub fn image(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
}

/// Where to look when a Deployment of braid's is not right.
fn look_at(ns: &str, name: &str) -> String {
    format!("kubectl -n {ns} describe deployment {name}; kubectl -n {ns} logs deployment/{name}")
}

/// A Deployment of braid's is installed, ready, and has a spare replica.
fn deployment(
    snap: &Snapshot,
    name: &str,
    read: &Read<Option<Deployment>>,
    what: &str,
    down_means: &str,
) -> Vec<Finding> {
    let ns = &snap.mesh_namespace;
    let d = match read {
        Ok(Some(d)) => d,
        Ok(None) => {
            return vec![Finding::fail(
                CONTROL_PLANE,
                format!("the {what} is not installed (Deployment {ns}/{name})"),
                INSTALL,
            )];
        }
        Err(e) => {
            return vec![Finding::unread(
                CONTROL_PLANE,
                &format!("Deployment {ns}/{name}"),
                e,
                look_at(ns, name),
                &format!("get deployments in {ns}"),
            )];
        }
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let look = look_at(ns, name);
    let image = image(d).unwrap_or_else(|| "no image".into());
    let mut found = Vec::new();
    if ready == 0 {
        found.push(
            Finding::fail(
                CONTROL_PLANE,
                format!("no {what} replica is ready (0/{want})"),
                look,
            )
            .meaning(down_means),
        );
    } else if ready < want {
        found.push(Finding::warn(
            CONTROL_PLANE,
            format!("{ready}/{want} {what} replicas are ready"),
            look,
        ));
    } else if want < 2 {
        found.push(
            Finding::warn(
                CONTROL_PLANE,
                format!("the {what} runs one replica"),
                format!("kubectl -n {ns} scale deployment {name} --replicas 2"),
            )
            .meaning("nothing takes over while it restarts or its node drains"),
        );
    } else {
        found.push(Finding::pass(
            CONTROL_PLANE,
            format!("{what}: {ready}/{want} replicas ready ({image})"),
        ));
    }
    // A digest pins an image without saying its release: nothing to compare.
    let last = image.rsplit('/').next().unwrap_or(&image);
    let tag = (!image.contains('@'))
        .then(|| last.rsplit_once(':').map(|(_, t)| t))
        .flatten();
    if let Some(tag) = tag
        && tag != env!("CARGO_PKG_VERSION")
    {
        found.push(Finding::warn(
            CONTROL_PLANE,
            format!(
                "the {what} runs {image}, and this braidctl is {}",
                env!("CARGO_PKG_VERSION")
            ),
            "use the braidctl of the installed release, or upgrade the mesh to this one",
        ));
    }
    found
}

/// The operator and the injector are ready, and one operator replica leads.
pub fn control_plane(snap: &Snapshot) -> Vec<Finding> {
    let mut found = deployment(
        snap,
        OPERATOR,
        &snap.operator,
        "operator",
        "no proxy gets new config or a certificate, and no status is written",
    );
    found.extend(deployment(
        snap,
        INJECTOR,
        &snap.injector,
        "injector",
        "its webhook fails closed: no pod can be created in a meshed namespace",
    ));
    found.extend(leader(snap));
    found
}

/// Exactly one operator replica leads.
fn leader(snap: &Snapshot) -> Vec<Finding> {
    let ns = &snap.mesh_namespace;
    let replicas = match &snap.replicas {
        Ok(r) => r,
        Err(e) => {
            return vec![Finding::unread(
                CONTROL_PLANE,
                "the operator's replicas",
                e,
                format!("kubectl -n {ns} get pods -l app.kubernetes.io/name={OPERATOR}"),
                &format!("list pods in {ns}"),
            )];
        }
    };
    // Asking a replica goes through the pod proxy, which the built-in view and edit
    // roles do not grant: refused everywhere says nothing about who leads.
    if !replicas.is_empty()
        && replicas
            .iter()
            .all(|(_, a)| a.as_ref().is_err_and(|e| is_forbidden(e)))
    {
        return vec![Finding::warn(
            CONTROL_PLANE,
            format!("cannot ask the operator's replicas: you may not get pods/proxy in {ns}"),
            format!(
                "run braidctl check as a user who may get pods/proxy and services/proxy in {ns}"
            ),
        )];
    }
    let mut found = Vec::new();
    let mut leaders = Vec::new();
    for (pod, answer) in replicas {
        match answer {
            Ok(a) if a.replica.leader => leaders.push(pod.clone()),
            Ok(_) => {}
            Err(e) => found.push(Finding::warn(
                CONTROL_PLANE,
                format!("operator replica {pod} does not answer on its admin port: {e}"),
                format!("kubectl -n {ns} logs {pod}"),
            )),
        }
    }
    found.push(match leaders.len() {
        0 => Finding::fail(
            CONTROL_PLANE,
            "no operator replica leads",
            format!(
                "kubectl -n {ns} get lease {OPERATOR} -o yaml; the replicas' logs say why none holds it"
            ),
        )
        .meaning("no status is written, no rollout steps and no healing acts until one does"),
        1 => Finding::pass(
            CONTROL_PLANE,
            format!(
                "operator replica {} leads ({} replica(s) answer)",
                leaders[0],
                replicas.iter().filter(|(_, a)| a.is_ok()).count()
            ),
        ),
        _ => Finding::fail(
            CONTROL_PLANE,
            format!("{} operator replicas lead at once: {}", leaders.len(), list(&leaders)),
            format!("kubectl -n {ns} get lease {OPERATOR} -o yaml; restart the replicas that should not lead"),
        ),
    });
    found
}

/// The bytes of `key` of a Secret.
fn secret_key<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
}

/// When the certificate of `key` ends, judged against `warn_left`.
fn in_date(
    now: SystemTime,
    what: &str,
    pem: Option<&[u8]>,
    warn_left: Duration,
    fix: &str,
) -> Finding {
    let ends = match pem.map(expiries) {
        Some(Bundle::Certificates(ends)) => ends,
        Some(Bundle::Unreadable(why)) => {
            return Finding::fail(CERTIFICATES, format!("{what} is unreadable: {why}"), fix);
        }
        None => return Finding::fail(CERTIFICATES, format!("{what} is missing"), fix),
    };
    let end = ends[0];
    match end.duration_since(now) {
        Err(_) => Finding::fail(
            CERTIFICATES,
            format!("{what} expired at {}", timestamp(end)),
            fix,
        ),
        Ok(left) if left < warn_left => Finding::warn(
            CERTIFICATES,
            format!(
                "{what} expires in {} day(s), at {}",
                left.as_secs() / 86_400,
                timestamp(end)
            ),
            fix,
        ),
        Ok(left) => Finding::pass(
            CERTIFICATES,
            format!(
                "{what} is valid until {} ({} days)",
                timestamp(end),
                left.as_secs() / 86_400
            ),
        ),
    }
}

/// The webhook is installed, reachable and trusted, and the CA and the webhook's
/// certificate are in date.
pub fn certificates(snap: &Snapshot) -> Vec<Finding> {
    let ns = &snap.mesh_namespace;
    let leader_fix = format!(
        "the operator's leader sets it from the CA (Secret {ns}/{CA_SECRET}): check that a replica leads, and its logs"
    );
    let mut found = Vec::new();
    let ca = match &snap.ca {
        Ok(Some(secret)) => {
            found.push(in_date(
                snap.now,
                &format!("the CA (Secret {ns}/{CA_SECRET}, tls.crt)"),
                secret_key(secret, "tls.crt"),
                CA_WARN_LEFT,
                "put a new CA in the Secret before it ends (docs/operator.md: rotate a root)",
            ));
            Some(secret)
        }
        Ok(None) => {
            found.push(
                Finding::fail(
                    CERTIFICATES,
                    format!("the CA's Secret {ns}/{CA_SECRET} does not exist"),
                    format!("the operator creates it when it first leads: kubectl -n {ns} logs deployment/{OPERATOR}"),
                )
                .meaning("no proxy gets a certificate: Strict mTLS refuses every call"),
            );
            None
        }
        Err(e) => {
            found.push(Finding::warn(
                CERTIFICATES,
                format!(
                    "cannot read Secret {ns}/{CA_SECRET} ({e}): the CA's expiry is not checked"
                ),
                format!("run braidctl check as a user who may get secrets in {ns}"),
            ));
            None
        }
    };
    match &snap.webhook_tls {
        Ok(Some(secret)) => found.push(in_date(
            snap.now,
            &format!("the injector's serving certificate (Secret {ns}/{WEBHOOK_SECRET})"),
            secret_key(secret, "tls.crt"),
            Duration::ZERO,
            &leader_fix,
        )),
        Ok(None) => found.push(Finding::fail(
            CERTIFICATES,
            format!(
                "the injector's serving certificate (Secret {ns}/{WEBHOOK_SECRET}) does not exist"
            ),
            leader_fix.clone(),
        )),
        Err(_) => {} // Secrets unreadable: said once, for the CA.
    }
    let config = match &snap.webhook {
        Ok(Some(c)) => c,
        Ok(None) => {
            found.push(
                Finding::fail(
                    CERTIFICATES,
                    format!("the webhook configuration {INJECTOR} is not installed"),
                    INSTALL,
                )
                .meaning("no pod is injected: new pods run without the proxy"),
            );
            return found;
        }
        Err(e) => {
            found.push(Finding::fail(
                CERTIFICATES,
                format!("cannot read MutatingWebhookConfiguration {INJECTOR}: {e}"),
                "run braidctl check as a user who may get mutatingwebhookconfigurations",
            ));
            return found;
        }
    };
    let trust = ca.and_then(|s| secret_key(s, "ca.crt"));
    for hook in config.webhooks.iter().flatten() {
        let bundle = hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty());
        let Some(bundle) = bundle else {
            found.push(
                Finding::fail(
                    CERTIFICATES,
                    format!("webhook {} has no caBundle", hook.name),
                    leader_fix.clone(),
                )
                .meaning("the API server cannot verify the injector: pod creation in meshed namespaces fails"),
            );
            continue;
        };
        match expiries(bundle) {
            Bundle::Unreadable(why) => {
                found.push(Finding::fail(
                    CERTIFICATES,
                    format!("webhook {}'s caBundle is unreadable: {why}", hook.name),
                    leader_fix.clone(),
                ));
                continue;
            }
            Bundle::Certificates(ends) if ends.iter().all(|e| *e <= snap.now) => {
                found.push(Finding::fail(
                    CERTIFICATES,
                    format!(
                        "webhook {}'s caBundle holds only expired certificates",
                        hook.name
                    ),
                    leader_fix.clone(),
                ));
                continue;
            }
            Bundle::Certificates(_) => {}
        }
        if let Some(trust) = trust
            && trust != bundle
        {
            found.push(
                Finding::fail(
                    CERTIFICATES,
                    format!(
                        "webhook {}'s caBundle is not the CA's trust bundle (ca.crt of Secret {ns}/{CA_SECRET})",
                        hook.name
                    ),
                    leader_fix.clone(),
                )
                .meaning("the API server may refuse the injector's certificate once it is reissued"),
            );
            continue;
        }
        if hook.failure_policy.as_deref() == Some("Ignore") {
            found.push(Finding::warn(
                CERTIFICATES,
                format!("webhook {} has failurePolicy Ignore", hook.name),
                "set failurePolicy: Fail, as the shipped manifest does",
            )
            .meaning("pods created while the injector is down run without the proxy, and without its mTLS"));
        }
        found.push(Finding::pass(
            CERTIFICATES,
            format!("webhook {}'s caBundle is the CA's and in date", hook.name),
        ));
    }
    found.push(match &snap.webhook_health {
        Ok(()) => Finding::pass(
            CERTIFICATES,
            format!("the API server reaches the injector through Service {ns}/{INJECTOR}"),
        ),
        Err(e) if is_forbidden(e) => Finding::warn(
            CERTIFICATES,
            format!("cannot check the API server's path to the injector: you may not get services/proxy in {ns}"),
            format!("run braidctl check as a user who may get pods/proxy and services/proxy in {ns}"),
        ),
        Err(e) => Finding::fail(
            CERTIFICATES,
            format!(
                "the API server cannot reach the injector through Service {ns}/{INJECTOR}: {e}"
            ),
            format!("kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={INJECTOR}"),
        )
        .meaning("pod creation in meshed namespaces fails while the webhook cannot be called"),
    });
    found
}
