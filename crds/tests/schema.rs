//! The generated CRDs are what the API server needs: fresh, structural, described, bounded,
//! with CEL rules that compile, stay inside the cost budget and use only 1.28's library.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use std::sync::LazyLock;

use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, cel::Program, compile_schema};
use regex::Regex;
use serde_json::Value;
use support::{repo_root, schema_of};

/// A comprehension macro binding a variable: `.all(r,`, `.filter(x,`.
static BINDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\.(?:all|exists|exists_one|filter|map)\((\w+),").unwrap());

const KINDS: [&str; 4] = [
    "TrafficRoute",
    "EncryptionPolicy",
    "SelfHealing",
    "AccessPolicy",
];

#[test]
fn checked_in_manifests_are_fresh() {
    for (file, yaml) in braid_crds::render::manifests().unwrap() {
        let path = repo_root().join("manifests/crds").join(file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} is stale: run `make crds` and commit the result",
            path.display()
        );
    }
}

/// Calls `f(path, node)` for every schema node under `schema`.
fn walk(schema: &Value, path: &str, f: &mut impl FnMut(&str, &Value)) {
    f(path, schema);
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, &format!("{path}.{k}"), f);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}[]"), f);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, &format!("{path}{{}}"), f);
    }
}

#[test]
fn every_field_has_a_description() {
    let mut missing = Vec::new();
    for kind in KINDS {
        walk(&schema_of(kind), kind, &mut |path, node| {
            if node
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && !path.ends_with("[]")
                && !path.ends_with("{}")
            {
                missing.push(path.to_owned());
            }
        });
    }
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain shows nothing):\n{missing:#?}"
    );
}

#[test]
fn schemas_are_structural() {
    let mut problems = Vec::new();
    for kind in KINDS {
        walk(&schema_of(kind), kind, &mut |path, node| {
            let preserve = node.get("x-kubernetes-preserve-unknown-fields")
                == Some(&Value::Bool(true))
                || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            if node.get("type").is_none() && !preserve {
                problems.push(format!("{path}: no type"));
            }
            for forbidden in [
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "$ref",
                "definitions",
                "$defs",
            ] {
                if node.get(forbidden).is_some() {
                    problems.push(format!("{path}: uses {forbidden}"));
                }
            }
            if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
                problems.push(format!("{path}: both properties and additionalProperties"));
            }
            if node.get("type").and_then(Value::as_str) == Some("array")
                && !node["items"].is_object()
            {
                problems.push(format!("{path}: array without a single items schema"));
            }
        });
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_list_string_and_map_in_spec_is_bounded() {
    let mut unbounded = Vec::new();
    for kind in KINDS {
        let schema = schema_of(kind);
        walk(
            &schema["properties"]["spec"],
            &format!("{kind}.spec"),
            &mut |path, node| {
                let has = |k: &str| node.get(k).is_some();
                match node.get("type").and_then(Value::as_str) {
                    Some("array") if !has("maxItems") => {
                        unbounded.push(format!("{path}: no maxItems"))
                    }
                    Some("string") if !has("maxLength") && !has("enum") => {
                        unbounded.push(format!("{path}: no maxLength"))
                    }
                    Some("object") if has("additionalProperties") && !has("maxProperties") => {
                        unbounded.push(format!("{path}: no maxProperties"))
                    }
                    _ => {}
                }
            },
        );
    }
    assert!(
        unbounded.is_empty(),
        "the CEL cost estimator needs bounds:\n{unbounded:#?}"
    );
}

/// Functions and macros of Kubernetes 1.28's CEL environment that braid's rules may use.
/// Deliberately short: `sum()` and other list-library functions are refused on 1.28.
const CEL_1_28_ALLOWED: &[&str] = &[
    "size",
    "all",
    "exists",
    "exists_one",
    "filter",
    "map",
    "has",
    "matches",
    "startsWith",
    "endsWith",
    "contains",
    "int",
    "double",
    "string",
    "duration",
];

#[test]
fn cel_rules_compile_stay_in_budget_and_use_only_1_28_functions() {
    let mut problems = Vec::new();
    let mut count = 0;
    for kind in KINDS {
        walk(&schema_of(kind), kind, &mut |path, node| {
            let Some(rules) = node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            else {
                return;
            };
            let compiled = compile_schema(node);
            for e in compiled.compilation_errors() {
                problems.push(format!("{path}: does not compile: {e}"));
            }
            for rule in rules {
                count += 1;
                let text = rule["rule"].as_str().unwrap();
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{path}: rule without message"
                );
                // kube-cel's scope check counts comprehension variables (`r` in
                // `self.rules.all(r, ...)`) as unknown; those are bound by the macro.
                let bound: Vec<String> = BINDER
                    .captures_iter(text)
                    .map(|c| format!("'{}'", &c[1]))
                    .collect();
                for w in analyze_rule(text, &compiled, ScopeContext::CrdValidation) {
                    if w.kind == WarningKind::WrongScope
                        && bound.iter().any(|v| w.message.contains(v.as_str()))
                    {
                        continue;
                    }
                    problems.push(format!("{path}: {text}: {}", w.message));
                }
                let program = Program::compile(text).unwrap();
                let references = program.references();
                let used: BTreeSet<&str> = references.functions().into_iter().collect();
                for f in used {
                    let operator = f.starts_with('_') || f.starts_with('@') || f == "!_";
                    if !operator && !CEL_1_28_ALLOWED.contains(&f) {
                        problems.push(format!("{path}: {text}: uses {f}(), not allowed for 1.28"));
                    }
                }
            }
        });
    }
    assert!(
        count >= 15,
        "expected the CEL rules of the issue, found {count}"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn names_columns_and_subresources_are_what_kubectl_users_expect() {
    let expect = [
        (
            "TrafficRoute",
            "tr",
            vec!["HOST", "RULES", "ACCEPTED", "AGE"],
        ),
        (
            "EncryptionPolicy",
            "encp",
            vec!["MODE", "PHASE", "PERCENT", "AGE"],
        ),
        ("SelfHealing", "heal", vec!["ACTION", "UNHEALTHY", "AGE"]),
        (
            "AccessPolicy",
            "ap",
            vec!["ACTION", "PHASE", "WOULD-DENY", "DENIED", "AGE"],
        ),
    ];
    let crds = braid_crds::crds();
    for (kind, short, columns) in expect {
        let (_, crd) = crds
            .iter()
            .find(|(_, c)| c.spec.names.kind == kind)
            .unwrap();
        assert_eq!(crd.spec.group, "braid.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_owned()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["braid".to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().unwrap().status.is_some(),
            "{kind}: no status subresource"
        );
        let names: Vec<&str> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, columns, "{kind}");
        let status = &schema_of(kind)["properties"]["status"]["properties"];
        assert!(
            status["observedGeneration"].is_object(),
            "{kind}: no status.observedGeneration"
        );
        assert!(
            status["conditions"].is_object(),
            "{kind}: no status.conditions"
        );
    }
}
