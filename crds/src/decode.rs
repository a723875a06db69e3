//! Reading a resource from untyped input (the directory source, tests) so that a type
//! error is reported like any other validation error: with its field path.

use serde::de::DeserializeOwned;

use crate::validation::{FieldPath, Validate, ValidationError, ValidationErrors};
use crate::{
    AccessPolicy, AccessPolicySpec, EncryptionPolicy, EncryptionPolicySpec, SelfHealing,
    SelfHealingSpec, TrafficRoute, TrafficRouteSpec,
};

/// A braid resource that [`decode`] can read.
pub trait Resource: DeserializeOwned + Validate {
    /// Its spec type.
    type Spec: DeserializeOwned;
}

impl Resource for TrafficRoute {
    type Spec = TrafficRouteSpec;
}

impl Resource for EncryptionPolicy {
    type Spec = EncryptionPolicySpec;
}

impl Resource for SelfHealing {
    type Spec = SelfHealingSpec;
}

impl Resource for AccessPolicy {
    type Spec = AccessPolicySpec;
}

/// Deserialises `value` into `T` and validates it. A field of the wrong type or an
/// unknown enum value comes back as `spec.mode: unknown variant ...` rather than an
/// error without a place, and a spec field the type does not have (a typo such as
/// `perTryTimout`, or `true` where YAML 1.1 turned a bare `on` key into a boolean) is an
/// error, as `kubectl apply` makes it.
pub fn decode<T: Resource>(value: &serde_json::Value) -> Result<T, ValidationErrors> {
    let mut unknown = Vec::new();
    // The spec alone: metadata and status are not the user's to misspell here.
    if let Some(spec) = value.get("spec") {
        let _: Result<T::Spec, _> = serde_ignored::deserialize(spec, |path| {
            unknown.push(field_path(&path, FieldPath::root("spec")).to_string())
        });
    }
    if !unknown.is_empty() {
        return Err(ValidationErrors(
            unknown
                .into_iter()
                .map(|path| ValidationError {
                    message: format!(
                        "unknown field {:?}: check its spelling with `kubectl explain`",
                        path.rsplit('.').next().unwrap_or(&path)
                    ),
                    path: FieldPath::root(&path),
                })
                .collect(),
        ));
    }
    let resource: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ValidationErrors(vec![ValidationError {
            path: FieldPath::root(if path == "." { "" } else { &path }),
            message: e.into_inner().to_string(),
        }])
    })?;
    resource.validate()?;
    Ok(resource)
}

/// serde_ignored's path (`rules.0.retries.?.x`) as a field path (`rules[0].retries.x`).
fn field_path(path: &serde_ignored::Path<'_>, root: FieldPath) -> FieldPath {
    use serde_ignored::Path;
    match path {
        Path::Root => root,
        Path::Seq { parent, index } => field_path(parent, root).index(*index),
        Path::Map { parent, key } => field_path(parent, root).field(key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent, root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EncryptionPolicy;

    #[test]
    fn type_errors_name_their_field() {
        let value = serde_json::json!({
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "EncryptionPolicy",
            "metadata": {"name": "p"},
            "spec": {"mode": "Encrypted"},
        });
        let errs = decode::<EncryptionPolicy>(&value).unwrap_err();
        assert_eq!(errs.paths(), vec!["spec.mode"]);
        assert!(errs.summary().contains("Permissive"), "{errs}");
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let value = serde_json::json!({
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "EncryptionPolicy",
            "metadata": {"name": "p"},
            "spec": {"mode": "Strict", "rolout": {"percent": 100}},
        });
        let errs = decode::<EncryptionPolicy>(&value).unwrap_err();
        assert_eq!(errs.paths(), vec!["spec.rolout"]);
        assert!(
            errs.summary().contains("unknown field \"rolout\""),
            "{errs}"
        );
    }
}
