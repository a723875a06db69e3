//! `braidctl proxy-status`: one line per proxy, from every operator replica's
//! `/debug/proxies`. A proxy streams from one replica and reports to the leader (through
//! whichever replica it reached), so the leader's answer says what each proxy holds and
//! each replica's says whether the proxy streams from it.

use std::time::SystemTime;

use braid_api::debug::{OperatorInfo, PROXIES_PATH, ProxiesAnswer};
use serde::Serialize;

use crate::cli::{Format, Global};
use crate::mesh::{Admin, Mesh};
use crate::output::{Table, Tone, age, paint, parse_time, short_duration};

/// One proxy, from all replicas' answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyLine {
    /// Its pod.
    pub pod: String,
    /// Whether it holds the latest config.
    pub current: bool,
    /// The version it should hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<String>,
    /// The version it reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<String>,
    /// When it first reported that version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// Its latest report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_report: Option<String>,
    /// The replica its stream is open on, and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams_from: Option<(String, String)>,
    /// Its certificate's expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_version: Option<String>,
}

/// What `proxy-status` prints: the replicas that answered, and the proxies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatusReport {
    /// The replicas that answered.
    pub replicas: Vec<OperatorInfo>,
    /// The replicas that did not, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
    /// Every proxy.
    pub proxies: Vec<ProxyLine>,
}

/// Asks every replica; fails only when none answers.
pub async fn gather(global: &Global) -> anyhow::Result<ProxyStatusReport> {
    let mesh = Mesh::from(global).await?;
    let operators = mesh.operators().await?;
    let asks = operators.iter().map(|admin| async move {
        (
            admin,
            admin
                .get_json::<ProxiesAnswer>(PROXIES_PATH, global.timeout)
                .await,
        )
    });
    let answers: Vec<(&Admin, Result<ProxiesAnswer, crate::http::HttpError>)> =
        futures::future::join_all(asks).await;
    let mut ok = Vec::new();
    let mut unreachable = Vec::new();
    for (addr, answer) in answers {
        match answer {
            Ok(a) => ok.push(a),
            Err(e) => unreachable.push(format!("operator at {addr}: {e}")),
        }
    }
    if ok.is_empty() {
        anyhow::bail!(
            "no operator replica answered: {} (directory mode: check --operator, each replica's --admin-addr)",
            unreachable.join("; ")
        );
    }
    Ok(merge(ok, unreachable))
}

/// Merges the replicas' answers: what a proxy holds from the leader's answer (else the
/// one with its latest report), where it streams from from whichever replica says so.
pub fn merge(answers: Vec<ProxiesAnswer>, unreachable: Vec<String>) -> ProxyStatusReport {
    use std::collections::BTreeMap;
    /// Which answer a line's report part came from.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum From {
        Nobody,
        Follower,
        Leader,
    }
    let mut lines: BTreeMap<String, (ProxyLine, From)> = BTreeMap::new();
    for answer in &answers {
        let from = match answer.replica.leader {
            true => From::Leader,
            false => From::Follower,
        };
        for p in &answer.proxies {
            let (line, filled_from) = lines.entry(p.pod.clone()).or_insert_with(|| {
                (
                    ProxyLine {
                        pod: p.pod.clone(),
                        ..Default::default()
                    },
                    From::Nobody,
                )
            });
            // The leader hears every report; among followers, the freshest report wins.
            let take = match (from, *filled_from) {
                (From::Leader, _) | (_, From::Nobody) => true,
                (From::Follower, From::Follower) => p.last_report > line.last_report,
                _ => false,
            };
            if take {
                line.current = p.current;
                line.expected_version = p.expected_version.clone();
                line.applied_version = p.applied_version.clone();
                line.applied_at = p.applied_at.clone();
                line.last_report = p.last_report.clone();
                line.certificate_expires = p.certificate_expires.clone();
                line.proxy_version = p.proxy_version.clone().or(line.proxy_version.take());
                *filled_from = from;
            } else if line.proxy_version.is_none() {
                line.proxy_version = p.proxy_version.clone();
            }
            // A proxy streams from one replica; after a reconnect two may still say so
            // for a moment: the newer stream is the one that lives.
            if let Some(since) = &p.connected_since
                && line.streams_from.as_ref().is_none_or(|(_, s)| since > s)
            {
                line.streams_from = Some((answer.replica.name.clone(), since.clone()));
            }
        }
    }
    ProxyStatusReport {
        replicas: answers.into_iter().map(|a| a.replica).collect(),
        unreachable,
        proxies: lines.into_values().map(|(l, _)| l).collect(),
    }
}

/// Runs `braidctl proxy-status`.
pub async fn run(global: &Global) -> anyhow::Result<std::process::ExitCode> {
    let report = gather(global).await?;
    for u in &report.unreachable {
        eprintln!("braidctl: warning: {u}");
    }
    crate::output::print(global.output, &report, || {
        render(&report, global.output == Format::Wide, SystemTime::now())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// A config version as the table shows it: its first 12 characters.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

/// The table.
pub fn render(report: &ProxyStatusReport, wide: bool, now: SystemTime) -> String {
    if report.proxies.is_empty() {
        return "No meshed workloads.\n".into();
    }
    let mut headers = vec![
        "POD",
        "CONFIG",
        "APPLIED",
        "STREAM",
        "CERTIFICATE",
        "VERSION",
    ];
    if wide {
        headers.extend(["HOLDS", "LATEST", "LAST-REPORT"]);
    }
    let mut t = Table::new(&headers);
    for p in &report.proxies {
        let config = match (&p.applied_version, p.current) {
            (_, true) => paint("current", Tone::Good),
            (None, false) => paint("not heard from", Tone::Bad),
            (Some(held), false) => paint(
                &format!(
                    "STALE: holds {}, latest {}",
                    short(held),
                    p.expected_version.as_deref().map_or("-", short)
                ),
                Tone::Bad,
            ),
        };
        let ago = |t: &Option<String>| {
            t.as_deref()
                .and_then(parse_time)
                .map_or_else(|| "-".to_owned(), |t| format!("{} ago", age(t, now)))
        };
        let stream = match &p.streams_from {
            Some((replica, since)) => format!(
                "{replica} ({})",
                parse_time(since).map_or_else(|| "-".into(), |t| age(t, now))
            ),
            None => paint("not connected", Tone::Warn),
        };
        let cert = match p.certificate_expires.as_deref().and_then(parse_time) {
            None => "-".to_owned(),
            Some(at) => match at.duration_since(now) {
                Ok(left) => format!("expires in {}", short_duration(left.as_secs())),
                Err(_) => paint("EXPIRED", Tone::Bad),
            },
        };
        let mut row = vec![
            p.pod.clone(),
            config,
            ago(&p.applied_at),
            stream,
            cert,
            p.proxy_version.clone().unwrap_or_else(|| "-".into()),
        ];
        if wide {
            row.push(p.applied_version.clone().unwrap_or_default());
            row.push(p.expected_version.clone().unwrap_or_default());
            row.push(ago(&p.last_report));
        }
        t.row(row);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_api::debug::ProxyStatus;

    fn replica(name: &str, leader: bool, proxies: Vec<ProxyStatus>) -> ProxiesAnswer {
        ProxiesAnswer {
            replica: OperatorInfo {
                name: name.into(),
                version: "0.1.0".into(),
                leader,
                compiled_at: None,
            },
            proxies,
        }
    }

    #[test]
    fn the_leader_says_what_a_proxy_holds_and_any_replica_where_it_streams() {
        let follower = replica(
            "operator-1",
            false,
            vec![ProxyStatus {
                pod: "shop/a".into(),
                expected_version: Some("v2".into()),
                applied_version: Some("v2".into()),
                current: true,
                last_report: Some("2026-12-07T10:00:00Z".into()),
                connected_since: Some("2026-12-07T09:00:00Z".into()),
                ..Default::default()
            }],
        );
        let leader = replica(
            "operator-0",
            true,
            vec![
                ProxyStatus {
                    pod: "shop/a".into(),
                    expected_version: Some("v2".into()),
                    applied_version: Some("v1".into()),
                    current: false,
                    last_report: Some("2026-12-07T09:59:00Z".into()),
                    proxy_version: Some("0.1.0".into()),
                    ..Default::default()
                },
                ProxyStatus {
                    pod: "shop/b".into(),
                    expected_version: Some("v7".into()),
                    ..Default::default()
                },
            ],
        );
        let report = merge(vec![follower.clone(), leader.clone()], vec![]);
        // Whichever order the replicas are named in.
        assert_eq!(
            report.proxies,
            merge(vec![leader, follower], vec![]).proxies
        );
        let a = &report.proxies[0];
        assert_eq!(a.applied_version.as_deref(), Some("v1"));
        assert!(!a.current);
        assert_eq!(
            a.streams_from,
            Some(("operator-1".into(), "2026-12-07T09:00:00Z".into()))
        );
        let now = parse_time("2026-12-07T10:00:30Z").unwrap();
        let text = render(&report, false, now);
        assert!(
            text.contains("shop/a   STALE: holds v1, latest v2   -         operator-1 (60m)"),
            "{text}"
        );
        assert!(text.contains("shop/b   not heard from"), "{text}");
        assert!(text.contains("not connected"), "{text}");
    }
}
