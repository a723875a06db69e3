//! Every example under manifests/examples/ (and e2e/demo/) is what a user would apply: the API server
//! takes it, braid's validate() takes it, and it survives YAML → type → YAML.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;

use braid_crds::{AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::{api_server_errors, braid_validate, repo_root, typed, yaml_docs};

/// The examples, and the resources `make demo` applies (e2e/demo/), which double as
/// documentation.
fn examples() -> Vec<(String, String)> {
    let mut files: Vec<_> = ["manifests/examples", "e2e/demo"]
        .iter()
        .flat_map(|dir| fs::read_dir(repo_root().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The braid resources shown in README.md, so the README stays true.
fn readme_resources() -> Vec<Value> {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    readme
        .split("```yaml")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.contains("apiVersion: braid.dev/"))
        .flat_map(yaml_docs)
        .collect()
}

#[test]
fn the_readme_examples_are_valid_too() {
    let docs = readme_resources();
    assert_eq!(docs.len(), 4, "expected one example per kind in README.md");
    for doc in docs {
        let errors = api_server_errors(&doc);
        assert!(
            errors.is_empty(),
            "README: the API server would refuse:\n{}",
            errors.join("\n")
        );
        if let Err(e) = braid_validate(&doc) {
            panic!("README: validate() refuses {}:\n{e}", doc["kind"]);
        }
    }
}

#[test]
fn there_is_an_example_for_every_scenario_of_the_issue() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    for scenario in [
        "steering-header-transfer.yaml",
        "gray-release-90-10.yaml",
        "mirror-shadow.yaml",
        "fault-injection.yaml",
        "retries-timeouts.yaml",
        "mtls-gradual-rollout.yaml",
        "mtls-port-exemption.yaml",
        "eject-and-restart.yaml",
        "overload-cpu.yaml",
        "access-lock-down.yaml",
        "access-path-scoped.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == scenario),
            "manifests/examples/{scenario} is missing"
        );
    }
}

#[test]
fn the_api_server_and_validate_accept_every_example() {
    for (name, text) in examples() {
        for doc in yaml_docs(&text) {
            let errors = api_server_errors(&doc);
            assert!(
                errors.is_empty(),
                "{name}: the API server would refuse it:\n{}",
                errors.join("\n")
            );
            if let Err(e) = braid_validate(&doc) {
                panic!("{name}: validate() refuses it:\n{e}");
            }
        }
    }
}

/// Every field the user wrote comes back with the same value (defaults may be added).
fn assert_contains(written: &Value, back: &Value, path: &str, file: &str) {
    match (written, back) {
        (Value::Object(w), Value::Object(b)) => {
            for (k, v) in w {
                let b = b
                    .get(k)
                    .unwrap_or_else(|| panic!("{file}: {path}.{k} lost on round trip"));
                assert_contains(v, b, &format!("{path}.{k}"), file);
            }
        }
        (Value::Array(w), Value::Array(b)) => {
            assert_eq!(w.len(), b.len(), "{file}: {path} changed length");
            for (i, (w, b)) in w.iter().zip(b).enumerate() {
                assert_contains(w, b, &format!("{path}[{i}]"), file);
            }
        }
        (Value::Number(w), Value::Number(b)) => {
            assert_eq!(w.as_f64(), b.as_f64(), "{file}: {path} changed");
        }
        (w, b) => assert_eq!(w, b, "{file}: {path} changed"),
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    doc: &Value,
    file: &str,
) {
    let first: T = typed(doc);
    let yaml = serde_norway::to_string(&first).unwrap();
    let back: Value = serde_norway::from_str(&yaml).unwrap();
    assert_contains(doc, &back, "", file);
    let second: T = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(
        first, second,
        "{file}: YAML → type → YAML → type changed the value"
    );
}

#[test]
fn every_example_round_trips() {
    for (name, text) in examples() {
        for doc in yaml_docs(&text) {
            match doc["kind"].as_str().unwrap() {
                "TrafficRoute" => round_trip::<TrafficRoute>(&doc, &name),
                "EncryptionPolicy" => round_trip::<EncryptionPolicy>(&doc, &name),
                "SelfHealing" => round_trip::<SelfHealing>(&doc, &name),
                "AccessPolicy" => round_trip::<AccessPolicy>(&doc, &name),
                other => panic!("{name}: unexpected kind {other}"),
            }
        }
    }
}

/// kubectl reads YAML 1.1, where unquoted y/n/yes/no/on/off are booleans; a string field
/// written that way would arrive as `true`. Examples quote such strings.
#[test]
fn examples_quote_yaml_1_1_booleans() {
    let risky = [
        "y", "n", "yes", "no", "on", "off", "Y", "N", "Yes", "No", "On", "Off", "YES", "NO", "ON",
        "OFF",
    ];
    for (name, text) in examples() {
        for (i, line) in text.lines().enumerate() {
            let code = line.split('#').next().unwrap_or_default();
            for token in code.split(|c: char| c.is_whitespace() || ",:{}[]-".contains(c)) {
                assert!(
                    !risky.contains(&token),
                    "{name}:{}: unquoted {token:?} is a boolean to kubectl; quote it",
                    i + 1
                );
            }
        }
    }
}
