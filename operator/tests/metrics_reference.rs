//! docs/metrics.md's operator section is what the operator registers now (`make docs`
//! rewrites it), so the reference cannot drift from the metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_api::metrics_reference::{check_section, families, markdown};

#[test]
fn the_metrics_reference_lists_every_operator_metric() {
    let metrics = braid_operator::metrics::Metrics::new();
    metrics.exercise_for_reference();
    let found = families(&metrics.encode());
    assert!(found.len() >= 10, "{found:?}");
    for f in &found {
        assert!(!f.help.is_empty(), "{} has no help", f.name);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    if let Err(e) = check_section(&path, "operator", &markdown(&found)) {
        panic!("{e}");
    }
}
