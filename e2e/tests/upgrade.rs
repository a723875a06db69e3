//! End-to-end. Hitless upgrade: a new sidecar process takes over from the running one
//! through the handover socket, as an upgrade in a pod would, while the apps call through
//! it; no request fails and no kept-alive connection is closed under its caller.
//! Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;

use braid_e2e::keepalive;
use support::*;

/// How long a replaced sidecar may take to finish: its in-flight requests (`/slow` takes
/// 2 s) and, on the server side, its mTLS connections, which callers close within their
/// pool's idle timeout (4 s, swept every 2 s).
const REPLACED_WITHIN: Duration = Duration::from_secs(20);

/// A keep-alive load from `pod` to `payments:80`: 4 connections POSTing (nobody retries
/// a POST), every 25th request of each held 2 s by the server, so requests are in flight
/// at every takeover.
struct KeepAlive {
    stop: std::path::PathBuf,
}

impl KeepAlive {
    fn start(pod: &mut Pod) -> Self {
        let stop = pod.dir().join("stop-keepalive");
        let _ = std::fs::remove_file(&stop);
        pod.spawn_app(
            "keepalive",
            &[
                "keep-alive-load",
                "payments:80",
                "--conns",
                "4",
                "--slow-every",
                "25",
                "--post",
                "--stop-file",
                &stop.display().to_string(),
            ],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Self { stop }
    }

    fn stop(self, pod: &mut Pod) -> keepalive::Summary {
        std::fs::write(&self.stop, "").unwrap();
        assert!(pod.wait_exit("keepalive", Duration::from_secs(10)).unwrap());
        let out = pod.log("keepalive");
        let field = |name: &str| {
            out.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        };
        keepalive::Summary {
            ok: field("ok="),
            failed: field("failed="),
            opened: field("opened="),
            told_close: field("told_close="),
        }
    }
}

/// Replaces `pod`'s sidecar `times` times in a row, a second of load between each.
fn upgrade_times(pod: &mut Pod, times: u32) {
    for i in 0..times {
        std::thread::sleep(Duration::from_secs(1));
        let label = pod
            .upgrade_sidecar(REPLACED_WITHIN)
            .unwrap_or_else(|e| panic!("takeover {}: {e}", i + 1));
        let log = pod.log(&label);
        assert!(
            log.contains("taking over from the proxy running at the handover socket"),
            "takeover {} started afresh instead:\n{log}",
            i + 1
        );
    }
}

#[test]
fn the_client_sidecar_is_replaced_five_times_under_load_and_no_request_or_connection_fails() {
    let (_mesh, mut client, _server) = upgradable_mesh();
    let keep = KeepAlive::start(&mut client);
    // New connections too: one per request.
    let fresh = start_load(&mut client);
    upgrade_times(&mut client, 5);
    std::thread::sleep(Duration::from_secs(1));
    stop_load(&mut client, fresh);
    let summary = keep.stop(&mut client);
    assert_eq!(summary.failed, 0, "{summary}");
    assert!(summary.ok > 100, "{summary}");
    // Every kept-alive connection went from sidecar to sidecar: none was closed, so the
    // app never opened another.
    assert_eq!(summary.opened, 4, "{summary}");
    assert_eq!(summary.told_close, 0, "{summary}");
    let log = client.log(&client.sidecar_label());
    assert!(
        log.contains("the predecessor has handed everything over"),
        "{log}"
    );
}

#[test]
fn the_server_sidecar_is_replaced_five_times_under_load_over_mtls_and_no_request_fails() {
    let (mesh, mut client, mut server) = upgradable_mesh();
    let op = mesh.operator().unwrap();
    op.write_resource("tls.yaml", &encryption_policy("payments", "mode: Strict"))
        .unwrap();
    wait_until("Strict in force", 15, || {
        if endpoint_tls(&client, &server).is_none() {
            let _ = client.app(&["get", "payments:80"]);
        }
        inbound_tls(&server) == "Strict" && endpoint_tls(&client, &server).is_some()
    });
    let keep = KeepAlive::start(&mut client);
    let fresh = start_load(&mut client);
    upgrade_times(&mut server, 5);
    std::thread::sleep(Duration::from_secs(1));
    stop_load(&mut client, fresh);
    let summary = keep.stop(&mut client);
    assert_eq!(summary.failed, 0, "{summary}");
    assert!(summary.ok > 100, "{summary}");
    // The app's connections end at its own sidecar, which the server's upgrade leaves be.
    assert_eq!(summary.opened, 4, "{summary}");
    // Strict stayed Strict: the last sidecar took the config over with it, and what it
    // served came over mTLS, none of it in plaintext.
    assert_eq!(inbound_tls(&server), "Strict");
    let metrics = server.metrics().unwrap();
    assert!(
        metrics.contains(r#"code="200",tls="true""#),
        "no mTLS request on the last server sidecar:\n{metrics}"
    );
    assert!(
        !metrics.contains(r#"tls="false""#),
        "plaintext on a Strict port:\n{metrics}"
    );
}

#[test]
fn twenty_takeovers_leave_the_sidecar_with_the_descriptors_listeners_and_memory_of_one() {
    let (_mesh, mut client, _server) = upgradable_mesh();
    client.upgrade_sidecar(REPLACED_WITHIN).unwrap();
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    let first = footprint(&client);
    for _ in 1..20 {
        client.upgrade_sidecar(REPLACED_WITHIN).unwrap();
    }
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    let last = footprint(&client);
    assert_eq!(last.listening, first.listening, "{first:?} then {last:?}");
    assert_eq!(last.fds, first.fds, "{first:?} then {last:?}");
    assert!(
        last.rss_kb <= first.rss_kb + first.rss_kb / 4,
        "{first:?} then {last:?}"
    );
    // What the sidecar listens on: outbound and inbound capture (IPv4 and IPv6), admin,
    // health, and nothing else.
    assert_eq!(first.listening.len(), 6, "{first:?}");
}

/// What the running sidecar holds.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    fds: usize,
    listening: Vec<String>,
    rss_kb: u64,
}

/// The running sidecar's open descriptors, the addresses it listens on and its RSS, once
/// two readings a moment apart agree on the descriptors (a probe or a config poll may
/// hold one for an instant).
fn footprint(pod: &Pod) -> Footprint {
    let pid = pod.pid(&pod.sidecar_label()).unwrap();
    let mut last: Option<Footprint> = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = read_footprint(pid);
        if let Some(prev) = &last
            && prev.fds == now.fds
            && prev.listening == now.listening
        {
            return now;
        }
        last = Some(now);
    }
    panic!("the sidecar's descriptors never settled: {last:?}");
}

fn read_footprint(pid: u32) -> Footprint {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut inodes = HashSet::new();
    let mut fds = 0;
    for entry in std::fs::read_dir(&fd_dir).unwrap() {
        fds += 1;
        if let Ok(target) = std::fs::read_link(entry.unwrap().path()) {
            let t = target.display().to_string();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut listening = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, state 0A (LISTEN), inode.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                listening.push(format!("{table} {}", f[1]));
            }
        }
    }
    listening.sort();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    Footprint {
        fds,
        listening,
        rss_kb,
    }
}
