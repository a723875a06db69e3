//! The Grafana dashboards (`manifests/dashboards/`) query only what braid exports: every
//! `braid_…` series a panel's PromQL names is in the metrics reference (docs/metrics.md,
//! which is generated from the proxy's and the operator's registries and checked fresh),
//! every label a selector or a `by (…)` names is one of that metric's, and a histogram is
//! only queried through its `_bucket`, `_sum` or `_count` series.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A metric of the reference: its type and labels.
#[derive(Debug)]
struct Known {
    kind: String,
    labels: BTreeSet<String>,
}

/// The rows of docs/metrics.md's tables: `| `series` | type | `a`, `b` | … |`.
fn reference() -> BTreeMap<String, Known> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `braid_")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let series = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_owned();
        let labels = cells[2]
            .split(", ")
            .map(|l| l.trim_matches('`').to_owned())
            .filter(|l| l != "—")
            .collect();
        out.insert(
            series,
            Known {
                kind: cells[1].to_owned(),
                labels,
            },
        );
    }
    out
}

/// The metric a series name of a query belongs to, if any: itself, or a histogram's.
fn metric_of<'a>(reference: &'a BTreeMap<String, Known>, series: &str) -> Option<&'a Known> {
    if let Some(k) = reference.get(series) {
        return (k.kind != "histogram").then_some(k);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        reference.get(base).filter(|k| k.kind == "histogram")
    })
}

/// `braid_…` names in a PromQL expression, with the label names of the selector that
/// follows each (`{a="x", b!~"y"}`).
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("braid_") {
        let start = i + at;
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
        if start > 0 && ident(bytes[start - 1]) {
            i = start + 6;
            continue;
        }
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        let name_end = end;
        let mut labels = Vec::new();
        if bytes.get(end) == Some(&b'{') {
            // Matchers up to the closing brace outside quotes (a regex may hold braces
            // and commas).
            let mut quoted = false;
            let mut escaped = false;
            let mut name = String::new();
            let mut in_name = true;
            let mut j = end + 1;
            while j < bytes.len() {
                let c = bytes[j] as char;
                if quoted {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => quoted = false,
                        _ => {}
                    }
                } else if c == '"' {
                    quoted = true;
                } else if c == '}' {
                    break;
                } else if c == ',' {
                    in_name = true;
                } else if in_name && (c.is_ascii_alphanumeric() || c == '_') {
                    name.push(c);
                } else if in_name && !name.is_empty() {
                    labels.push(std::mem::take(&mut name));
                    in_name = false;
                }
                j += 1;
            }
            end = j;
        }
        out.push((expr[start..name_end].to_owned(), labels));
        i = end;
    }
    out
}

/// The label names of every `by`, `without`, `on`, `ignoring`, `group_left` and
/// `group_right` clause, written with or without a space before the parenthesis.
fn grouping(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for keyword in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut from = 0;
        while let Some(at) = expr[from..].find(keyword) {
            let start = from + at;
            from = start + keyword.len();
            let word_before = expr[..start]
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let rest = expr[from..].trim_start();
            if word_before || !rest.starts_with('(') {
                continue;
            }
            let close = rest.find(')').unwrap_or(rest.len());
            out.extend(
                rest[1..close]
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}

#[test]
fn every_panel_queries_series_and_labels_braid_exports() {
    let reference = reference();
    assert!(
        reference.contains_key("braid_requests_total")
            && reference.contains_key("braid_operator_connected_proxies"),
        "docs/metrics.md's tables were not read: {:?}",
        reference.keys()
    );
    let dir = repo().join("manifests/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    let mut exprs = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap())
                .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        assert!(
            uids.insert(dashboard["uid"].as_str().unwrap().to_owned()),
            "{name}: uid taken"
        );
        // Template variables' queries (label_values(braid_…, label)) name series too.
        for var in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(query) = var["query"]["query"].as_str() else {
                continue;
            };
            if let Some(args) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
            {
                let (series, label) = args.rsplit_once(',').unwrap();
                let (series, label) = (series.trim(), label.trim());
                // A selector's labels must be the series' too.
                let (metric, selector) = match series.split_once('{') {
                    Some((metric, selector)) => (metric, selector.trim_end_matches('}')),
                    None => (series, ""),
                };
                let selected = selector
                    .split(',')
                    .filter_map(|m| m.split(['=', '!']).next())
                    .map(str::trim)
                    .filter(|l| !l.is_empty());
                match metric_of(&reference, metric) {
                    Some(m) if m.labels.contains(label) => {
                        for l in selected.filter(|l| !m.labels.contains(*l)) {
                            problems.push(format!(
                                "{name}: variable {}: {metric} has no label {l}",
                                var["name"]
                            ));
                        }
                    }
                    _ => problems.push(format!(
                        "{name}: variable {}: {metric} has no label {label}",
                        var["name"]
                    )),
                }
            }
        }
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{name}: no panels");
        assert!(
            panels
                .iter()
                .all(|p| p["type"] != "row" || p["panels"].as_array().is_none_or(Vec::is_empty)),
            "{name}: rows holding panels are not checked here; keep panels at the top level"
        );
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title}: no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                exprs += 1;
                let used = selectors(expr);
                if used.is_empty() {
                    problems.push(format!("{name}: {title}: queries no braid series: {expr}"));
                }
                let mut labels_in_expr: BTreeSet<String> = ["le".to_owned()].into();
                for (series, labels) in &used {
                    let Some(metric) = metric_of(&reference, series) else {
                        problems.push(format!(
                            "{name}: {title}: {series} is not in docs/metrics.md"
                        ));
                        continue;
                    };
                    queried.insert(series.clone());
                    labels_in_expr.extend(metric.labels.iter().cloned());
                    for label in labels {
                        if !metric.labels.contains(label) {
                            problems.push(format!(
                                "{name}: {title}: {series} has no label {label} (it has {:?})",
                                metric.labels
                            ));
                        }
                    }
                }
                for label in grouping(expr) {
                    if !labels_in_expr.contains(&label) {
                        problems.push(format!(
                            "{name}: {title}: groups by {label}, which none of its series has"
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "{} dashboards, {exprs} queries over {} series",
        files.len(),
        queried.len()
    );
}

#[test]
fn the_checker_catches_what_does_not_exist() {
    let reference = reference();
    let used = selectors(
        r#"sum by (target) (rate(braid_requests_total{direction="in",nope=~"x"}[5m])) / braid_made_up"#,
    );
    assert_eq!(
        used,
        [
            (
                "braid_requests_total".to_owned(),
                vec!["direction".to_owned(), "nope".to_owned()]
            ),
            ("braid_made_up".to_owned(), vec![])
        ]
    );
    assert!(metric_of(&reference, "braid_made_up").is_none());
    assert!(metric_of(&reference, "braid_request_duration_seconds_bucket").is_some());
    assert!(
        metric_of(&reference, "braid_request_duration_seconds").is_none(),
        "a histogram is queried through its series"
    );
    assert!(!reference["braid_requests_total"].labels.contains("nope"));
    assert_eq!(grouping("sum by (le, direction) (x)"), ["le", "direction"]);
    assert_eq!(
        grouping("sum by(a) (x) / on(b) group_left (c) y"),
        ["a", "b", "c"]
    );
    assert!(grouping("braid_x_by (1)").is_empty(), "not a clause");
    assert_eq!(
        selectors(r#"rate(braid_requests_total{code=~"5[0-9]{2}",direction!="in"}[5m])"#),
        [(
            "braid_requests_total".to_owned(),
            vec!["code".to_owned(), "direction".to_owned()]
        )]
    );
}
