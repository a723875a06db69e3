//! The ProxyConfig shown in docs/proxy.md parses and compiles, so the docs stay true.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_proxy::tables::{Tables, load_file};

/// The first YAML block of docs/proxy.md that `wanted` accepts.
fn readme_yaml(what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/proxy.md")).unwrap();
    readme
        .split("```yaml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| wanted(b))
        .unwrap_or_else(|| panic!("docs/proxy.md shows {what}"))
        .to_owned()
}

#[test]
fn the_docs_config_example_loads() {
    let block = readme_yaml("a ProxyConfig", |b| {
        b.contains("listeners:") && b.contains("services:")
    });
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), block).unwrap();
    let config = load_file(file.path()).unwrap();
    let tables = Tables::build(config).unwrap();
    let target = tables.outbound("10.96.0.10:80".parse().unwrap()).unwrap();
    assert_eq!(target.endpoints.len(), 2);
    assert_eq!(&*tables.listeners[0].target.label, "payments.shop:80");
}

#[test]
fn the_docs_routes_example_compiles() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Routes {
        routes: Vec<braid_proxy::config::routes::ServiceRoutes>,
    }
    let block = readme_yaml("routes", |b| b.trim_start().starts_with("routes:"));
    let parsed: Routes = serde_norway::from_str(&block).unwrap();
    let table = braid_proxy::routing::RouteTable::compile(
        &parsed.routes[0],
        80,
        &["(default)", "Group_2"],
        &mut braid_proxy::routing::Carry::after(None),
        "routes[0]",
    )
    .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("type", http::HeaderValue::from_static("transfer"));
    let head = braid_proxy::routing::RequestHead {
        method: &http::Method::GET,
        path: "/",
        headers: &headers,
    };
    assert_eq!(&*table.select(&head).unwrap().name, "transfers");
}
