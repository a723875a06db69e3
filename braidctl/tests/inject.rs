//! `braidctl inject`/`uninject` run the injector's own offline injection: the output is
//! what `braid_injector::offline` gives for the same flags, and uninject reverses it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use clap::Parser;
use serde_json::Value;

const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: app, image: 'example.com/web:1', ports: [{containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80, targetPort: 8080}]
";

fn braidctl(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_braidctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The injector's flags, parsed as its own binary parses them.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    inject: braid_injector::args::InjectArgs,
}

#[test]
fn inject_is_the_injectors_offline_injection_and_uninject_reverses_it() {
    let out = braidctl(
        &["inject", "--proxy-image", "registry.example/braid:v2"],
        APP,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected = String::from_utf8(out.stdout).unwrap();
    let flags = Flags::parse_from(["injector", "--proxy-image", "registry.example/braid:v2"]);
    let expected =
        braid_injector::offline::inject_documents(APP, &flags.inject.settings(true)).unwrap();
    assert_eq!(injected, expected);
    let docs = documents(&injected);
    let template = &docs[0]["spec"]["template"]["spec"];
    let init: Vec<&str> = template["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(init, ["braid-init", "braid-proxy"]);
    assert_eq!(
        template["initContainers"][1]["image"],
        "registry.example/braid:v2"
    );
    assert_eq!(docs[1]["kind"], "Service");

    let out = braidctl(&["uninject", "-f", "-"], &injected);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        documents(&String::from_utf8(out.stdout).unwrap()),
        documents(APP)
    );
}

#[test]
fn bad_input_names_the_flag_or_the_document() {
    let out = braidctl(&["inject", "-f", "/nonexistent/app.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("braidctl: -f /nonexistent/app.yaml: cannot read it"),
        "{err}"
    );
    let out = braidctl(
        &["inject"],
        "kind: Deployment\nmetadata: {name: web}\nspec: [\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("document 1"), "{err}");
}
