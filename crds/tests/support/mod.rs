//! Test support: loading YAML as `kubectl apply` would, and an "API server" that checks
//! an object against braid's generated CRD in the order a real one does on create:
//! defaults, then the OpenAPI schema (types, enums, ranges, patterns, bounds; via a
//! draft-4 validator, which ignores `nullable`), strict unknown-field checking (kubectl's
//! default), list-map key uniqueness, then the CEL rules (kube-cel), which the API server
//! skips only when a type error makes evaluation meaningless.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use braid_crds::{
    AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute, ValidationErrors, decode,
};
use kube::core::cel::{Validator, apply_defaults};
use serde::Deserialize;
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every document of a multi-document YAML text.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The openAPIV3Schema of the braid CRD serving `kind`.
pub fn schema_of(kind: &str) -> Value {
    let (_, crd) = braid_crds::crds()
        .into_iter()
        .find(|(_, crd)| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no braid CRD for kind {kind}"));
    let schema = crd.spec.versions[0].schema.as_ref().unwrap();
    serde_json::to_value(schema.open_api_v3_schema.as_ref().unwrap()).unwrap()
}

/// What the API server says about creating `obj`: every error as `path: message`.
pub fn api_server_errors(obj: &Value) -> Vec<String> {
    let kind = obj["kind"].as_str().expect("object has a kind");
    let schema = schema_of(kind);
    // The API server validates spec and status; metadata belongs to it.
    let mut body = obj.clone();
    let map = body.as_object_mut().unwrap();
    for key in ["apiVersion", "kind", "metadata"] {
        map.remove(key);
    }
    let defaulted = apply_defaults(&schema, &body);

    let mut errors = Vec::new();
    let mut type_error = false;
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema is valid JSON schema");
    for e in validator.iter_errors(&defaulted) {
        type_error |= matches!(
            e.kind(),
            jsonschema::error::ValidationErrorKind::Type { .. }
        );
        errors.push(format!("{}: {}", dotted(e.instance_path().as_str()), e));
    }
    unknown_fields(&schema, &defaulted, "", &mut errors);
    list_keys(&schema, &defaulted, "", &mut errors);
    if !type_error && let Err(cel) = Validator::new().validate(&schema, &defaulted, None) {
        errors.extend(cel.iter().map(|e| e.to_string()));
    }
    errors
}

/// `/spec/rules/0/name` → `spec.rules[0].name`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// kubectl's default `--validate=strict`: a field the schema does not declare is an error.
fn unknown_fields(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in map {
                    match props.get(k) {
                        Some(s) => unknown_fields(s, v, &join(path, k), errors),
                        None => errors.push(format!("{}: unknown field", join(path, k))),
                    }
                }
            } else if let Some(s) = schema.get("additionalProperties") {
                for (k, v) in map {
                    unknown_fields(s, v, &format!("{path}[{k:?}]"), errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(s, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// `x-kubernetes-list-type: map` keys and `set` entries must be unique.
fn list_keys(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in map {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    list_keys(s, v, &join(path, k), errors);
                }
            }
        }
        Value::Array(items) => {
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|ks| ks.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let id = match list_type {
                    Some("map") => keys
                        .iter()
                        .map(|k| item[*k].to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    Some("set") => item.to_string(),
                    _ => String::new(),
                };
                if list_type.is_some() && !seen.insert(id.clone()) {
                    errors.push(format!("{path}[{i}]: Duplicate value: {id}"));
                }
                if let Some(s) = schema.get("items") {
                    list_keys(s, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// Decodes `obj` into its braid type and runs `validate()`, as the operator does.
pub fn braid_validate(obj: &Value) -> Result<(), ValidationErrors> {
    match obj["kind"].as_str() {
        Some("TrafficRoute") => decode::<TrafficRoute>(obj).map(drop),
        Some("EncryptionPolicy") => decode::<EncryptionPolicy>(obj).map(drop),
        Some("SelfHealing") => decode::<SelfHealing>(obj).map(drop),
        Some("AccessPolicy") => decode::<AccessPolicy>(obj).map(drop),
        other => panic!("not a braid kind: {other:?}"),
    }
}

/// `obj` as the braid type `T`.
pub fn typed<T: serde::de::DeserializeOwned>(obj: &Value) -> T {
    serde_json::from_value(obj.clone())
        .unwrap_or_else(|e| panic!("does not deserialise: {e}\n{obj:#}"))
}
