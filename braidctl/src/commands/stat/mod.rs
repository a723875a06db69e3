//! `braidctl stat [pod|deploy|svc|route]`: the golden signals — success rate, requests
//! per second, p50/p95/p99 latency — per workload (what it serves), service (what its
//! callers see) or TrafficRoute rule and group, from every proxy's own metrics, scraped
//! twice `--window` apart. No Prometheus needed.

pub mod signals;

use std::process::ExitCode;
use std::time::Instant;

use signals::{Row, Scrape};

use crate::cli::{Global, StatArgs, StatBy};
use crate::mesh::{Mesh, MetricsSource};
use crate::output::Table;

/// The families `stat` reads.
const PREFIX: &str = "braid_request";

/// Scrapes every source; those that do not answer are named in `missed`.
async fn scrape_all(
    sources: &[MetricsSource],
    global: &Global,
    missed: &mut Vec<String>,
) -> Vec<Scrape> {
    let asks = sources.iter().map(|s| async move {
        let answer = s
            .admin
            .get(braid_api::ports::SCRAPE_PATH, global.timeout)
            .await;
        (s, answer)
    });
    let mut scrapes = Vec::new();
    for (source, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(body) => scrapes.push(Scrape {
                pod: source.pod.clone(),
                owner: source.owner.clone(),
                samples: braid_api::exposition::parse(&String::from_utf8_lossy(&body), PREFIX),
            }),
            Err(e) => missed.push(format!("{}: {e}", source.pod)),
        }
    }
    scrapes
}

/// One round of scrapes, and its middle: when the counters were read, near enough.
async fn round(
    sources: &[MetricsSource],
    global: &Global,
    missed: &mut Vec<String>,
) -> (Vec<Scrape>, Instant) {
    let start = Instant::now();
    let scrapes = scrape_all(sources, global, missed).await;
    (scrapes, start + start.elapsed() / 2)
}

/// Runs `braidctl stat`.
pub async fn run(global: &Global, args: &StatArgs) -> anyhow::Result<ExitCode> {
    let mesh = Mesh::from(global).await?;
    let namespace = match global.all_namespaces {
        true => None,
        false => global.namespace.as_deref(),
    };
    // What a workload serves is in its own proxy; what a service's callers saw is in
    // theirs, wherever they run.
    let scope = match args.by {
        StatBy::Pod | StatBy::Deploy => namespace,
        StatBy::Svc | StatBy::Route => None,
    };
    let sources = mesh.metrics_sources(scope).await?;
    if sources.is_empty() {
        anyhow::bail!("no meshed workload found (-n and -A choose the namespaces)");
    }
    let mut missed = Vec::new();
    let (before, after, window) = match args.window.is_zero() {
        true => {
            let (after, _) = round(&sources, global, &mut missed).await;
            (None, after, args.window)
        }
        false => {
            let (first, t0) = round(&sources, global, &mut missed).await;
            tokio::time::sleep(args.window).await;
            let (second, t1) = round(&sources, global, &mut missed).await;
            // A proxy missing from the first round would count its whole life as this
            // window's: it is left out, and named.
            let (kept, late): (Vec<Scrape>, Vec<Scrape>) = second
                .into_iter()
                .partition(|s| first.iter().any(|f| f.pod == s.pod));
            missed.extend(
                late.iter()
                    .map(|s| format!("{}: answered the second scrape only", s.pod)),
            );
            (Some(first), kept, t1.duration_since(t0))
        }
    };
    if after.is_empty() {
        anyhow::bail!("no proxy's metrics answered: {}", missed.join("; "));
    }
    let rows: Vec<Row> = signals::rows(before.as_deref(), &after, args.by, window)
        .into_iter()
        .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
        .collect();
    crate::output::print(global.output, &rows, || render(&rows, args.by))?;
    missed.sort();
    missed.dedup();
    for m in &missed {
        eprintln!("braidctl: not counted: {m}");
    }
    Ok(ExitCode::SUCCESS)
}

fn number(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}{unit}"))
}

/// The table of `rows`.
pub fn render(rows: &[Row], by: StatBy) -> String {
    if rows.is_empty() {
        return "No requests seen.\n".into();
    }
    let mut headers = vec!["NAMESPACE", "NAME"];
    if by == StatBy::Route {
        headers.extend(["RULE", "GROUP"]);
    }
    headers.extend(["PROXIES", "REQUESTS", "SUCCESS", "RPS", "P50", "P95", "P99"]);
    let mut t = Table::new(&headers);
    for r in rows {
        let mut row = vec![r.namespace.clone(), r.name.clone()];
        if by == StatBy::Route {
            let or_dash = |s: &Option<String>| match s.as_deref() {
                None | Some("") => "-".to_owned(),
                Some(s) => s.to_owned(),
            };
            row.extend([or_dash(&r.rule), or_dash(&r.group)]);
        }
        row.extend([
            r.proxies.to_string(),
            r.requests.to_string(),
            number(r.success_percent, "%"),
            number(r.rps, ""),
            number(r.p50_ms, "ms"),
            number(r.p95_ms, "ms"),
            number(r.p99_ms, "ms"),
        ]);
        t.row(row);
    }
    t.render()
}
