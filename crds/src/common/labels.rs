//! Schemas for label maps (`{app: payments}`): bounded in count and value length, so CEL
//! rules over the objects that hold them stay inside the cost budget.

use schemars::{Schema, SchemaGenerator, json_schema};

use crate::limits;

/// A map of label keys to values, possibly empty.
pub fn label_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": limits::MAX_LABEL_VALUE_LENGTH},
        "maxProperties": limits::MAX_LABELS,
    })
}

/// A map of label keys to values with at least one entry.
pub fn non_empty_label_map_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = label_map_schema(generator);
    schema.insert("minProperties".into(), 1.into());
    schema
}
