//! Matching one request against 100 rules: the cost routing adds to every request.
//! `cargo bench -p braid-proxy --bench routing`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use braid_proxy::config::routes::{
    HeaderMatch, PathMatch, RequestMatch, Rule, ServiceRoutes, ValueMatch, WeightedGroup,
};
use braid_proxy::routing::{Carry, RequestHead, RouteTable};
use criterion::{Criterion, criterion_group, criterion_main};

/// 99 rules that do not match (a mix of exact, prefix and regex header and path
/// conditions), then a catch-all: the worst case, every rule tried.
fn hundred_rules() -> ServiceRoutes {
    let mut rules: Vec<Rule> = (0..99)
        .map(|i| {
            let header = match i % 3 {
                0 => ValueMatch::Exact(format!("tenant-{i}")),
                1 => ValueMatch::Prefix(format!("tenant-{i}-")),
                _ => ValueMatch::Regex(format!("tenant-{i}-[a-z]+")),
            };
            let path = match i % 3 {
                0 => PathMatch::Prefix(format!("/api/v{i}")),
                1 => PathMatch::Exact(format!("/api/v{i}/items")),
                _ => PathMatch::Regex(format!("/api/v{i}/items/[0-9]+")),
            };
            Rule {
                name: format!("rule-{i}"),
                matches: vec![RequestMatch {
                    headers: vec![HeaderMatch {
                        name: "x-tenant".into(),
                        value: header,
                    }],
                    path: Some(path),
                    method: Some("POST".into()),
                }],
                route: vec![WeightedGroup {
                    group: "Group_1".into(),
                    weight: 100,
                }],
                ..Default::default()
            }
        })
        .collect();
    rules.push(Rule {
        name: "default".into(),
        matches: Vec::new(),
        route: vec![
            WeightedGroup {
                group: "Group_1".into(),
                weight: 90,
            },
            WeightedGroup {
                group: "Group_2".into(),
                weight: 10,
            },
        ],
        ..Default::default()
    });
    ServiceRoutes {
        from: "shop/payments".into(),
        service: "payments".into(),
        namespace: "shop".into(),
        port: None,
        rules,
    }
}

fn bench(c: &mut Criterion) {
    let table = RouteTable::compile(
        &hundred_rules(),
        80,
        &["Group_1", "Group_2"],
        &mut Carry::after(None),
        "routes[0]",
    )
    .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", http::HeaderValue::from_static("tenant-x"));
    headers.insert("user-agent", http::HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", http::HeaderValue::from_static("*/*"));
    let method = http::Method::POST;
    c.bench_function("route 100 rules, last matches", |b| {
        b.iter(|| {
            let head = RequestHead {
                method: &method,
                path: std::hint::black_box("/api/v7/items/42"),
                headers: &headers,
            };
            let rule = table.select(&head).unwrap();
            std::hint::black_box(rule.choose_group())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
