//! The OTLP trace receiver's logic (`braid-e2e-app otlp-receiver`): an OTLP/HTTP
//! protobuf export body flattened to one JSON object per span, as the receiver appends
//! them to its `--out` file (one a line), and the reader tests use on that file.

use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Map, Value, json};

/// The path OTLP/HTTP exporters post traces to.
pub const TRACES_PATH: &str = "/v1/traces";

/// The content type of OTLP/HTTP protobuf, asked and answered.
pub const PROTOBUF: &str = "application/x-protobuf";

/// Decodes an `ExportTraceServiceRequest` body into one JSON object per span.
pub fn decode_spans(body: &[u8]) -> Result<Vec<Value>, prost::DecodeError> {
    Ok(flatten(&ExportTraceServiceRequest::decode(body)?))
}

/// One JSON object per span of `req`:
///
/// ```json
/// {"trace_id": "<32 hex>", "span_id": "<16 hex>", "parent_span_id": "<16 hex or empty>",
///  "name": "...", "kind": "SPAN_KIND_CLIENT", "kind_code": 3,
///  "start_unix_nano": 1, "end_unix_nano": 2, "status_code": 0, "status_message": "",
///  "attributes": {"key": "string, number or bool"}, "resource": {"service.name": "..."},
///  "scope": "<instrumentation scope name>"}
/// ```
pub fn flatten(req: &ExportTraceServiceRequest) -> Vec<Value> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = Value::Object(
            rs.resource
                .as_ref()
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default(),
        );
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            for span in &ss.spans {
                let kind = SpanKind::try_from(span.kind).map_or_else(
                    |_| format!("SPAN_KIND_{}", span.kind),
                    |k| k.as_str_name().to_owned(),
                );
                let (status_code, status_message) = span
                    .status
                    .as_ref()
                    .map_or((0, ""), |s| (s.code, s.message.as_str()));
                out.push(json!({
                    "trace_id": hex(&span.trace_id),
                    "span_id": hex(&span.span_id),
                    "parent_span_id": hex(&span.parent_span_id),
                    "name": span.name,
                    "kind": kind,
                    "kind_code": span.kind,
                    "start_unix_nano": span.start_time_unix_nano,
                    "end_unix_nano": span.end_time_unix_nano,
                    "status_code": status_code,
                    "status_message": status_message,
                    "attributes": Value::Object(attributes(&span.attributes)),
                    "resource": resource,
                    "scope": scope,
                }));
            }
        }
    }
    out
}

/// The encoded empty `ExportTraceServiceResponse`: every span accepted.
pub fn success_response() -> Vec<u8> {
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// Every span in the receiver's `--out` file; none when it does not exist (yet). A
/// last line still being written (no newline yet) is left for the next read, and a
/// line that is not JSON (the receiver writes none) is skipped.
pub fn read_spans(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value(kv.value.as_ref())))
        .collect()
}

fn any_value(v: Option<&AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        // NaN and infinities have no JSON number.
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map_or_else(|| Value::String(d.to_string()), Value::Number),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any_value(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Object(attributes(&l.values)),
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn string(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.to_owned())
    }

    #[test]
    fn parent_and_child_round_trip() {
        let trace_id: Vec<u8> = (1..=16).collect();
        let parent = Span {
            trace_id: trace_id.clone(),
            span_id: vec![0xaa; 8],
            name: "inbound".to_owned(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 5_000,
            attributes: vec![
                kv("http.request.method", string("GET")),
                kv("http.response.status_code", any_value::Value::IntValue(200)),
            ],
            ..Default::default()
        };
        let child = Span {
            trace_id: trace_id.clone(),
            span_id: vec![0x0b; 8],
            parent_span_id: vec![0xaa; 8],
            name: "outbound".to_owned(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: 2_000,
            end_time_unix_nano: 4_000,
            attributes: vec![
                kv("error", any_value::Value::BoolValue(true)),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
            ],
            status: Some(Status {
                message: "upstream 503".to_owned(),
                code: 2,
            }),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", string("braid-proxy"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "braid".to_owned(),
                        ..Default::default()
                    }),
                    spans: vec![parent, child],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };

        let spans = decode_spans(&req.encode_to_vec()).unwrap();
        assert_eq!(spans.len(), 2);
        let (p, c) = (&spans[0], &spans[1]);

        assert_eq!(p["trace_id"], "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(c["trace_id"], p["trace_id"]);
        assert_eq!(p["span_id"], "aaaaaaaaaaaaaaaa");
        assert_eq!(p["parent_span_id"], "");
        assert_eq!(c["span_id"], "0b0b0b0b0b0b0b0b");
        assert_eq!(c["parent_span_id"], p["span_id"]);
        assert_eq!(p["name"], "inbound");
        assert_eq!(c["name"], "outbound");
        assert_eq!(p["kind"], "SPAN_KIND_SERVER");
        assert_eq!(p["kind_code"], 2);
        assert_eq!(c["kind"], "SPAN_KIND_CLIENT");
        assert_eq!(c["kind_code"], 3);
        assert_eq!(p["start_unix_nano"], 1_000);
        assert_eq!(p["end_unix_nano"], 5_000);
        assert_eq!(c["start_unix_nano"], 2_000);
        assert_eq!(c["end_unix_nano"], 4_000);
        assert_eq!(p["status_code"], 0);
        assert_eq!(c["status_code"], 2);
        assert_eq!(c["status_message"], "upstream 503");
        assert_eq!(
            p["attributes"],
            json!({"http.request.method": "GET", "http.response.status_code": 200})
        );
        assert_eq!(c["attributes"], json!({"error": true, "ratio": 0.5}));
        for s in [p, c] {
            assert_eq!(s["resource"], json!({"service.name": "braid-proxy"}));
            assert_eq!(s["scope"], "braid");
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(decode_spans(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn empty_response_decodes() {
        let resp = ExportTraceServiceResponse::decode(success_response().as_slice()).unwrap();
        assert_eq!(resp, ExportTraceServiceResponse::default());
    }

    #[test]
    fn read_spans_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        assert!(read_spans(&path).is_empty());
        std::fs::write(&path, "{\"name\":\"a\"}\n{\"name\":\"b\"}\n{\"name\":").unwrap();
        let spans = read_spans(&path);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1]["name"], "b");
    }
}
