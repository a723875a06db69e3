//! Reading a resource from untyped input (the directory source, tests) so that a type
//! error is reported like any other validation error: with its field path.

use serde::de::DeserializeOwned;

use crate::validation::{FieldPath, Validate, ValidationError, ValidationErrors};

/// Deserialises `value` into `T` and validates it. A field of the wrong type or an
/// unknown enum value comes back as `spec.mode: unknown variant ...` rather than an
/// error without a place.
pub fn decode<T: DeserializeOwned + Validate>(
    value: &serde_json::Value,
) -> Result<T, ValidationErrors> {
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
}
