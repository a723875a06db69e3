//! docs/metrics.md's proxy section is what the proxy registers now (`make docs` rewrites
//! it), so the reference cannot drift from the metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_api::metrics_reference::{check_section, families, markdown};

#[test]
fn the_metrics_reference_lists_every_proxy_metric() {
    let metrics = braid_proxy::metrics::reference::exercised();
    let found = families(&metrics.encode());
    assert!(found.len() >= 15, "{found:?}");
    let requests = found
        .iter()
        .find(|f| f.series() == "braid_requests_total")
        .unwrap();
    assert_eq!(
        requests.labels,
        [
            "workload",
            "workload_namespace",
            "direction",
            "target",
            "rule",
            "group",
            "code",
            "tls",
            "peer_identity"
        ]
    );
    for f in &found {
        assert!(!f.help.is_empty(), "{} has no help", f.name);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    if let Err(e) = check_section(&path, "proxy", &markdown(&found)) {
        panic!("{e}");
    }
}
