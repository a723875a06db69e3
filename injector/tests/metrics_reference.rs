//! docs/metrics.md's injector section is what the injector registers now (`make docs`
//! rewrites it), so the reference cannot drift from the metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_api::metrics_reference::{check_section, families, markdown};

#[test]
fn the_metrics_reference_lists_every_injector_metric() {
    let metrics = braid_injector::metrics::InjectorMetrics::new();
    metrics.exercise_for_reference();
    let found = families(&metrics.encode());
    assert_eq!(found.len(), 2, "{found:?}");
    for f in &found {
        assert!(!f.help.is_empty(), "{} has no help", f.name);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    if let Err(e) = check_section(&path, "injector", &markdown(&found)) {
        panic!("{e}");
    }
}
