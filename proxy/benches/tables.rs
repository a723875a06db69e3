//! What a proxy holding a whole large mesh (`--services all`) spends applying a new
//! version: 5,000 services × 10 endpoints with 500 routed services, built from scratch,
//! and after one endpoint was added (a delta's usual content).
//! `cargo bench -p braid-proxy --bench tables`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use braid_proxy::config::routes::ServiceRoutes;
use braid_proxy::config::{Endpoint, EndpointGroup, Protocol, ProxyConfig, Service, ServicePort};
use braid_proxy::tables::Tables;
use criterion::{Criterion, criterion_group, criterion_main};

const SERVICES: u32 = 5_000;
const ENDPOINTS: u32 = 10;
const ROUTED: u32 = 500;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn service(i: u32, endpoints: u32) -> Service {
    Service {
        name: format!("svc-{i}"),
        namespace: "mesh".into(),
        vips: vec![ip(0x0a60_0000 + i)],
        ports: vec![ServicePort {
            port: 80,
            target_port: Some(8080),
            protocol: Protocol::Http,
        }],
        groups: vec![EndpointGroup {
            name: "default".into(),
            endpoints: (0..endpoints)
                .map(|e| Endpoint {
                    address: ip(0x0a00_0000 + i * 16 + e),
                    labels: Default::default(),
                    identity: None,
                    meshed: true,
                    tls: None,
                })
                .collect(),
        }],
        ..Default::default()
    }
}

fn route(i: u32) -> ServiceRoutes {
    serde_json::from_value(serde_json::json!({
        "from": format!("mesh/route-{i}"),
        "service": format!("svc-{i}"),
        "namespace": "mesh",
        "rules": [
            {"name": "canary", "matches": [{"headers": [{"name": "x-canary", "exact": "1"}]}],
             "route": [{"group": "default", "weight": 100}]},
            {"name": "rest", "rateLimit": {"requestsPerSecond": 100}}
        ]
    }))
    .unwrap()
}

fn mesh(grown: Option<u32>) -> ProxyConfig {
    ProxyConfig {
        version: format!("{grown:?}"),
        services: (0..SERVICES)
            .map(|i| service(i, ENDPOINTS + u32::from(grown == Some(i))))
            .collect::<Vec<_>>()
            .into(),
        routes: (0..ROUTED).map(route).collect::<Vec<_>>().into(),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let before = mesh(None);
    let after = mesh(Some(7));
    let base = Tables::build(before.clone()).unwrap();
    let mut group = c.benchmark_group("tables 5,000 services");
    group.sample_size(10);
    group.bench_function("built from scratch", |b| {
        b.iter_batched(
            || after.clone(),
            |config| Tables::build(config).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("one endpoint added, after the last version", |b| {
        b.iter_batched(
            || after.clone(),
            |config| Tables::build_after(config, Some(&base)).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
