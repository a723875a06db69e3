//! Final touches on the generated schemas, so the API server takes them without warnings.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::Value;

/// The `format` values the API server understands; others (schemars' `uint32`, ...) draw
/// an "unrecognized format" warning on apply and carry no meaning, so they are dropped.
/// Ranges are expressed by `minimum`/`maximum` instead.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "date",
    "date-time",
    "duration",
    "password",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
];

/// Drops the formats the API server does not know.
pub fn tidy(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut() else {
            continue;
        };
        let Some(props) = schema.open_api_v3_schema.take() else {
            continue;
        };
        schema.open_api_v3_schema = Some(tidy_props(props));
    }
    crd
}

fn tidy_props(props: JSONSchemaProps) -> JSONSchemaProps {
    let Ok(mut value) = serde_json::to_value(&props) else {
        return props;
    };
    tidy_value(&mut value);
    serde_json::from_value(value).unwrap_or(props)
}

fn tidy_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(format)) = map.get("format")
                && !KNOWN_FORMATS.contains(&format.as_str())
            {
                map.remove("format");
            }
            map.values_mut().for_each(tidy_value);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_value),
        _ => {}
    }
}
