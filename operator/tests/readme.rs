//! The directory-mode files shown in docs/operator.md load, so the docs stay true.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_operator::compiler::{Options, compile};
use braid_operator::registry::{ObjectKey, Snapshot};
use braid_operator::source::dir::registry_file;
use braid_operator::stream::auth::{Authenticator, BootstrapTokens};

fn block(starting: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator.md"))
            .unwrap();
    readme
        .split("```yaml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.trim_start().starts_with(starting))
        .unwrap_or_else(|| panic!("docs/operator.md shows {starting}"))
        .to_string()
}

#[tokio::test]
async fn the_docs_registry_and_tokens_load() {
    let (services, workloads) = registry_file::parse(&block("# registry.yaml"))
        .unwrap()
        .resolve()
        .unwrap();
    let snapshot = Snapshot {
        services,
        workloads,
        ..Default::default()
    };
    let out = compile(&snapshot, &Options::default());
    // legacy-0 runs no proxy, so it gets no config, but it is still an endpoint.
    assert_eq!(out.configs.len(), 2);
    let pod = ObjectKey::new("shop", "checkout-0");
    let checkout = out.catalog.whole(&pod, &out.configs[&pod]);
    assert_eq!(checkout.services[0].groups[0].endpoints.len(), 2);

    let tokens = BootstrapTokens::parse(&block("# tokens.yaml")).unwrap();
    let who = tokens.authenticate("0b9d77e1c4a34f25b6e1").await.unwrap();
    assert_eq!(who.pod.as_deref(), Some("checkout-0"));
}
