//! Offline injection (`braid-injector inject -f FILE`), like `istioctl kube-inject`: the
//! same change the webhook makes, applied to the pod templates of YAML files, and its
//! exact reversal (`uninject`) from what `braid.dev/status` records.

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use crate::annotations::STATUS;
use crate::decide::{Decision, Refusal, decide};
use crate::inject::{
    InjectError, InjectStatus, ORIGINAL_PROBES, inject_workload, restore, scrape_annotations,
};
use crate::settings::Settings;

/// A document that could not be processed; names the document and what to fix.
#[derive(Debug, thiserror::Error)]
#[error("document {index} ({kind} {name}): {problem}")]
pub struct OfflineError {
    /// 1-based position in the input.
    pub index: usize,
    /// Its kind (`?` when it is not YAML).
    pub kind: String,
    /// Its name (`?` when it is not YAML).
    pub name: String,
    /// What is wrong.
    #[source]
    pub problem: DocumentError,
}

/// What is wrong with one document of the input.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// It is not YAML (the parser's message, with line and column).
    #[error("{0}")]
    Yaml(#[source] serde_norway::Error),
    /// Its pod template.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The pod template of an item of a `List` (`kind` and `name` are the item's).
    #[error("items[{index}]: {source}")]
    Item {
        /// 0-based position in `items`.
        index: usize,
        /// What is wrong with its template.
        source: TemplateError,
    },
    /// The changed document cannot be written back as YAML.
    #[error("{0}")]
    Print(#[source] serde_norway::Error),
}

/// Why a pod template is not injected or uninjected.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template's `metadata` and `spec` are not a pod's.
    #[error("{pointer}: {source}")]
    NotAPod {
        /// Where the template is in its document, as a JSON pointer (empty for a Pod).
        pointer: &'static str,
        /// Why it does not read as a pod.
        source: serde_json::Error,
    },
    /// The webhook would refuse the pod: what is wrong and how to fix it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// braid's containers cannot be added to the pod.
    #[error(transparent)]
    Inject(#[from] InjectError),
    /// An annotation braid-injector wrote at injection no longer reads as it writes it,
    /// so what to take out cannot be known.
    #[error(
        "metadata.annotations[{annotation}]: not what braid-injector records ({source}): \
         uninject takes out only what braid-injector recorded there; put back the value it \
         wrote, or remove what it added by hand"
    )]
    Record {
        /// [`STATUS`] or [`ORIGINAL_PROBES`].
        annotation: &'static str,
        /// Why it does not read.
        source: serde_json::Error,
    },
}

/// Where the pod template of a workload kind lives, as a JSON pointer.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Runs `f` on the pod template of every workload document of `text` (multi-document
/// YAML; the items of a `List`, as `kubectl get -o yaml` prints, count as documents),
/// passing other documents through, and prints the result as YAML.
fn each_template(
    text: &str,
    mut f: impl FnMut(&mut Pod, &str, Option<&str>) -> Result<(), TemplateError>,
) -> Result<String, OfflineError> {
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let fail = |(kind, name): (String, String), problem| OfflineError {
            index: i + 1,
            kind,
            name,
            problem,
        };
        let unknown = || ("?".to_owned(), "?".to_owned());
        let mut doc = serde_json::Value::deserialize(de)
            .map_err(|e| fail(unknown(), DocumentError::Yaml(e)))?;
        if doc.is_null() {
            continue;
        }
        let kind = doc["kind"].as_str().unwrap_or_default();
        let items = match kind.ends_with("List") {
            true => doc.get_mut("items").and_then(|i| i.as_array_mut()),
            false => None,
        };
        match items {
            Some(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    on_template(item, &mut f).map_err(|source| {
                        fail(kind_and_name(item), DocumentError::Item { index, source })
                    })?;
                }
            }
            None => {
                on_template(&mut doc, &mut f).map_err(|e| fail(kind_and_name(&doc), e.into()))?
            }
        }
        out.push(
            serde_norway::to_string(&doc)
                .map_err(|e| fail(kind_and_name(&doc), DocumentError::Print(e)))?,
        );
    }
    Ok(out.join("---\n"))
}

/// An object's kind and name, for messages.
fn kind_and_name(doc: &serde_json::Value) -> (String, String) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (text(&doc["kind"]), text(&doc["metadata"]["name"]))
}

/// Runs `f` on `doc`'s pod template, if its kind has one.
fn on_template(
    doc: &mut serde_json::Value,
    f: &mut impl FnMut(&mut Pod, &str, Option<&str>) -> Result<(), TemplateError>,
) -> Result<(), TemplateError> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    // The object's name (else its generateName's stem) names its pods' workload; a
    // Pod's own is read from its metadata, owner first.
    let meta = &doc["metadata"];
    let workload = meta["name"]
        .as_str()
        .or_else(|| {
            meta["generateName"]
                .as_str()
                .map(|g| g.trim_end_matches('-'))
        })
        .filter(|n| !n.is_empty() && kind != "Pod")
        .map(str::to_owned);
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let Some(pointer) = template_pointer(kind) else {
        return Ok(());
    };
    let Some(template) = doc.pointer_mut(pointer) else {
        return Ok(());
    };
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": template.get("metadata").cloned().unwrap_or_default(),
        "spec": template.get("spec").cloned().unwrap_or_default(),
    }))
    .map_err(|source| TemplateError::NotAPod { pointer, source })?;
    f(&mut pod, &namespace, workload.as_deref())?;
    let metadata = serde_json::to_value(&pod.metadata).unwrap_or_default();
    let spec = serde_json::to_value(&pod.spec).unwrap_or_default();
    if let Some(obj) = template.as_object_mut() {
        // A template left without labels or annotations keeps no empty `metadata: {}`.
        match metadata.as_object().is_some_and(|m| m.is_empty()) {
            true => obj.remove("metadata"),
            false => obj.insert("metadata".into(), metadata),
        };
        obj.insert("spec".into(), spec);
    }
    Ok(())
}

/// Injects into every pod template of `text` that the webhook would inject.
pub fn inject_documents(text: &str, settings: &Settings) -> Result<String, OfflineError> {
    each_template(text, |pod, namespace, workload| {
        let overrides = match decide(pod, namespace, true, settings) {
            Decision::Inject(o) => o,
            Decision::Skip(_) => return Ok(()),
            Decision::Refuse(why) => return Err(why.into()),
        };
        // A template's pods are the object's: a Deployment's name, not its ReplicaSet's.
        // A Pod (no template) is named as the webhook names it, from its own metadata.
        inject_workload(pod, settings, &overrides, workload)?;
        Ok(())
    })
}

/// Removes exactly what `braid.dev/status` says was injected.
pub fn uninject_documents(text: &str) -> Result<String, OfflineError> {
    each_template(text, |pod, _, _| {
        let Some(recorded) = pod
            .metadata
            .annotations
            .as_mut()
            .and_then(|a| a.remove(STATUS))
        else {
            return Ok(());
        };
        let status: InjectStatus =
            serde_json::from_str(&recorded).map_err(|source| TemplateError::Record {
                annotation: STATUS,
                source,
            })?;
        let probes = pod
            .metadata
            .annotations
            .as_mut()
            .and_then(|a| a.remove(ORIGINAL_PROBES));
        // The scrape annotations it added, unless changed since (then they are the user's).
        if let Some(annotations) = pod.metadata.annotations.as_mut() {
            let added = scrape_annotations();
            annotations.retain(|k, v| {
                !(status.annotations.contains(k)
                    && added.iter().any(|(key, value)| key == k && value == v))
            });
        }
        if pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.is_empty())
        {
            pod.metadata.annotations = None;
        }
        let Some(spec) = pod.spec.as_mut() else {
            return Ok(());
        };
        if let Some(probes) = probes {
            let originals =
                serde_json::from_str(&probes).map_err(|source| TemplateError::Record {
                    annotation: ORIGINAL_PROBES,
                    source,
                })?;
            restore(&mut spec.containers, &originals);
        }
        spec.containers
            .retain(|c| !status.containers.contains(&c.name));
        if let Some(inits) = spec.init_containers.as_mut() {
            inits.retain(|c| !status.init_containers.contains(&c.name));
        }
        if spec.init_containers.as_ref().is_some_and(Vec::is_empty) {
            spec.init_containers = None;
        }
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(|v| !status.volumes.contains(&v.name));
        }
        if spec.volumes.as_ref().is_some_and(Vec::is_empty) {
            spec.volumes = None;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: payments, namespace: shop}
spec:
  selector: {matchLabels: {app: payments}}
  template:
    metadata:
      labels: {app: payments}
      annotations: {braid.dev/exclude-outbound-ports: "5432"}
    spec:
      containers:
      - name: app
        image: payments:1
        ports: [{name: http, containerPort: 8080}, {containerPort: 9090}]
        livenessProbe: {tcpSocket: {port: http}, periodSeconds: 7}
        readinessProbe: {httpGet: {path: /ready, port: 8443, scheme: HTTPS}}
        startupProbe: {grpc: {port: 9090}}
      - name: sidecar
        image: shipper:1
        livenessProbe: {exec: {command: [/bin/true]}}
        readinessProbe: {httpGet: {path: /, port: 80, host: 10.0.0.1}}
---
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: shop}
spec: {selector: {app: payments}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: report, image: report:1}]
"#;

    fn docs(text: &str) -> Vec<serde_json::Value> {
        serde_norway::Deserializer::from_str(text)
            .map(|d| serde_json::Value::deserialize(d).unwrap())
            .filter(|d| !d.is_null())
            .collect()
    }

    fn init_names(doc: &serde_json::Value, pointer: &str) -> Vec<String> {
        doc.pointer(pointer)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn workloads_are_injected_and_other_documents_pass_through() {
        let out = inject_documents(DEPLOYMENT, &Settings::default()).unwrap();
        let out = docs(&out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            init_names(&out[0], "/spec/template/spec/initContainers"),
            ["braid-init", "braid-proxy"]
        );
        let args = out[0]
            .pointer("/spec/template/spec/initContainers/0/args")
            .unwrap()
            .to_string();
        assert!(args.contains("5432"), "{args}");
        // Every probe the proxy can perform is pointed at it (so uninject has
        // something to put back); exec and another host's stay.
        for kind in ["liveness", "readiness", "startup"] {
            let probe =
                &out[0]["spec"]["template"]["spec"]["containers"][0][format!("{kind}Probe")];
            assert_eq!(
                probe["httpGet"]["path"],
                format!("/app-health/app/{kind}"),
                "{probe}"
            );
        }
        let sidecar = &out[0]["spec"]["template"]["spec"]["containers"][1];
        assert!(sidecar["livenessProbe"]["exec"].is_object(), "{sidecar}");
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["host"], "10.0.0.1");
        assert_eq!(out[1], docs(DEPLOYMENT)[1], "a Service is left alone");
        // The proxy is told the workload it serves: the object's name.
        let env = &out[0]["spec"]["template"]["spec"]["initContainers"][1]["env"];
        let workload = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "BRAID_WORKLOAD")
            .unwrap();
        assert_eq!(workload["value"], "payments", "{env}");
        assert_eq!(
            init_names(
                &out[2],
                "/spec/jobTemplate/spec/template/spec/initContainers"
            ),
            ["braid-init", "braid-proxy"]
        );
    }

    #[test]
    fn uninject_restores_the_input() {
        let injected = inject_documents(DEPLOYMENT, &Settings::default()).unwrap();
        let restored = uninject_documents(&injected).unwrap();
        // Compare as pods: injecting and removing leaves the templates as they were.
        let (a, b) = (docs(DEPLOYMENT), docs(&restored));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            let Some(p) = template_pointer(x["kind"].as_str().unwrap()) else {
                assert_eq!(x, y);
                continue;
            };
            let pod = |d: &serde_json::Value| -> Pod {
                let t = d.pointer(p).unwrap();
                serde_json::from_value(
                    serde_json::json!({"metadata": t["metadata"], "spec": t["spec"]}),
                )
                .unwrap()
            };
            assert_eq!(pod(x), pod(y), "{}", x["kind"]);
        }
        // And injecting the restored output again works: nothing braid added is left.
        inject_documents(&restored, &Settings::default()).unwrap();
    }

    // Found by a newcomer: the CronJob's template came back with `metadata: {}` it did
    // not have. The documents themselves, not only their pods, are what went in.
    #[test]
    fn uninject_gives_back_the_documents_as_they_were() {
        let injected = inject_documents(DEPLOYMENT, &Settings::default()).unwrap();
        let restored = uninject_documents(&injected).unwrap();
        assert_eq!(docs(&restored), docs(DEPLOYMENT));
    }

    // Found by a newcomer: `kubectl get deploy -o yaml` prints a `List`, which passed
    // through uninjected.
    #[test]
    fn the_items_of_a_list_are_injected_and_errors_name_the_item() {
        let items: Vec<serde_json::Value> = docs(DEPLOYMENT);
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        let text = serde_norway::to_string(&list).unwrap();
        let out = docs(&inject_documents(&text, &Settings::default()).unwrap());
        assert_eq!(
            init_names(&out[0], "/items/0/spec/template/spec/initContainers"),
            ["braid-init", "braid-proxy"]
        );
        assert_eq!(out[0]["items"][1], items[1], "a Service is left alone");
        let restored = uninject_documents(&serde_norway::to_string(&out[0]).unwrap()).unwrap();
        assert_eq!(docs(&restored)[0], list);
        let bad = text
            .replace("'5432'", "postgres")
            .replace("\"5432\"", "postgres");
        let err = inject_documents(&bad, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("document 1 (Deployment payments): items[0]: annotation braid.dev/exclude-outbound-ports"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_annotation_names_the_document() {
        let text = DEPLOYMENT.replace("\"5432\"", "\"postgres\"");
        let err = inject_documents(&text, &Settings::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "document 1 (Deployment payments): annotation braid.dev/exclude-outbound-ports"
            ),
            "{err}"
        );
    }

    /// The error of `inject_documents` (or `uninject_documents`) for `text`, as the
    /// `braid-injector` CLI prints it.
    fn refusal(text: &str, uninject: bool) -> String {
        let result = match uninject {
            true => uninject_documents(text),
            false => inject_documents(text, &Settings::default()),
        };
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_pod_braid_cannot_take_names_the_document_and_the_container() {
        let text = DEPLOYMENT.replace("- name: sidecar", "- name: braid-proxy");
        assert_eq!(
            refusal(&text, false),
            "document 1 (Deployment payments): spec.containers: the pod already has \
             \"braid-proxy\", which braid adds; rename it"
        );
    }

    #[test]
    fn a_template_that_is_not_a_pod_names_where_it_is() {
        let text = DEPLOYMENT.replace("image: payments:1", "image: [payments, 1]");
        let err = refusal(&text, false);
        assert!(
            err.starts_with("document 1 (Deployment payments): /spec/template: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn input_that_is_not_yaml_names_the_document() {
        let text = format!("{DEPLOYMENT}---\nkind: [Pod\n");
        let err = refusal(&text, false);
        assert!(err.starts_with("document 4 (? ?): "), "{err}");
    }

    // uninject undoes only what braid-injector recorded: a record that does not read
    // is named, and the message says how to go on.
    #[test]
    fn uninject_refuses_a_record_it_cannot_read_and_says_what_to_do() {
        let injected = docs(&inject_documents(DEPLOYMENT, &Settings::default()).unwrap());
        let pointer = "/spec/template/metadata/annotations";
        for (annotation, bad) in [(STATUS, "{"), (ORIGINAL_PROBES, "[1]")] {
            let mut doc = injected[0].clone();
            let recorded = &mut doc.pointer_mut(pointer).unwrap()[annotation];
            assert!(recorded.is_string(), "{annotation} is recorded: {recorded}");
            *recorded = bad.into();
            let err = refusal(&serde_norway::to_string(&doc).unwrap(), true);
            assert!(
                err.starts_with(&format!(
                    "document 1 (Deployment payments): metadata.annotations[{annotation}]: \
                     not what braid-injector records ("
                )),
                "{err}"
            );
            assert!(
                err.ends_with(
                    "): uninject takes out only what braid-injector recorded there; put back \
                     the value it wrote, or remove what it added by hand"
                ),
                "{err}"
            );
        }
    }
}
