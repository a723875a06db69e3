//! The webhook's work per AdmissionReview: parse, decide, inject, diff, encode.
//! Target: p99 under 5 ms (criterion reports the distribution of the mean; the per-call
//! times are far below that). `cargo bench -p braid-injector --bench review`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use braid_injector::settings::Settings;
use braid_injector::webhook::review::review_json;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/admission/deployment-pod-create.json"
    ))
    .unwrap();
    let settings = Settings::default();
    let out = review_json(&body, &settings);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    // The target is a percentile: time calls one by one and print it.
    let mut times: Vec<std::time::Duration> = (0..5_000)
        .map(|_| {
            let started = std::time::Instant::now();
            black_box(review_json(black_box(&body), &settings));
            started.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "review of a captured deployment pod, 5,000 calls: p50 {:?}, p99 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    c.bench_function("review: deployment pod (captured from 1.28)", |b| {
        b.iter(|| black_box(review_json(black_box(&body), &settings)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
