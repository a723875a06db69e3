//! End-to-end. Hitless upgrade: `braid-proxy upgrade` in the pod has the sidecar's
//! supervisor (the container's process, as the injector writes it) run a new proxy
//! binary, which takes over from the running proxy through the handover socket, while
//! the apps call through it; no request fails and no kept-alive connection is closed
//! under its caller. Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;

use support::*;

/// A request loop of the e2e app running in a pod until told to stop.
struct Loop {
    label: &'static str,
    stop: std::path::PathBuf,
}

impl Loop {
    fn start(pod: &mut Pod, label: &'static str, args: &[&str]) -> Self {
        let stop = pod.dir().join(format!("stop-{label}"));
        let _ = std::fs::remove_file(&stop);
        let stop_arg = stop.display().to_string();
        let mut full = args.to_vec();
        full.extend(["--stop-file", &stop_arg]);
        pod.spawn_app(label, &full).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Self { label, stop }
    }

    /// A keep-alive HTTP/1.1 load to `payments:80`: 4 connections POSTing (nobody
    /// retries a POST), every 25th request of each held 2 s by the server, so requests
    /// are in flight at every takeover.
    fn keep_alive(pod: &mut Pod) -> Self {
        let args = [
            "keep-alive-load",
            "payments:80",
            "--conns",
            "4",
            "--slow-every",
            "25",
            "--post",
        ];
        Self::start(pod, "keepalive", &args)
    }

    /// An HTTP/2 load to `payments:80` as a gRPC client makes it: 8 streams over one
    /// connection, every 25th request of each held 2 s.
    fn h2(pod: &mut Pod) -> Self {
        let args = [
            "h2-load",
            "payments:80",
            "--streams",
            "8",
            "--slow-every",
            "25",
        ];
        Self::start(pod, "h2load", &args)
    }

    /// Stops it; `name=value` counts it printed.
    fn stop(self, pod: &mut Pod) -> Counts {
        std::fs::write(&self.stop, "").unwrap();
        assert!(pod.wait_exit(self.label, Duration::from_secs(10)).unwrap());
        Counts(pod.log(self.label))
    }
}

/// What a loop printed.
struct Counts(String);

impl Counts {
    fn get(&self, name: &str) -> u64 {
        self.0
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.0))
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.trim())
    }
}

/// Replaces the proxy in `pod`'s sidecar `times` times in a row, a second of load
/// between each, each time with a release of its own; the supervisor stays.
fn upgrade_times(pod: &mut Pod, times: u32) {
    let supervisor = pod.pid("sidecar").unwrap();
    for i in 1..=times {
        std::thread::sleep(Duration::from_secs(1));
        let before = pod.proxy_pid().unwrap();
        let release = pod.proxy_release(&format!("braid-proxy-{i}")).unwrap();
        let out = pod
            .upgrade_sidecar(&release, None)
            .unwrap_or_else(|e| panic!("upgrade {i}: {e}"));
        assert!(
            out.contains(&format!("upgraded: proxy pid {before} -> ")),
            "{out}"
        );
        assert_ne!(pod.proxy_pid().unwrap(), before);
        assert!(pod.is_running("sidecar").unwrap());
        assert_eq!(pod.pid("sidecar").unwrap(), supervisor);
    }
    let log = pod.log("sidecar");
    assert_eq!(
        log.matches("taking over from the proxy running at the handover socket")
            .count(),
        times as usize,
        "{log}"
    );
}

#[test]
fn the_client_sidecar_is_replaced_five_times_under_load_and_no_request_or_connection_fails() {
    let (_mesh, mut client, _server) = mesh();
    let keep = Loop::keep_alive(&mut client);
    let h2 = Loop::h2(&mut client);
    // Kept-alive connections to an address outside the mesh (the server's excluded
    // port): opaque TCP tunnels through the sidecar, plaintext both ways.
    let outside = Loop::start(
        &mut client,
        "outside",
        &["keep-alive-load", "server:9090", "--conns", "4", "--post"],
    );
    // New connections too: one per request.
    let fresh = start_load(&mut client);
    upgrade_times(&mut client, 5);
    std::thread::sleep(Duration::from_secs(1));
    stop_load(&mut client, fresh);
    let summary = keep.stop(&mut client);
    assert_eq!(summary.get("failed"), 0, "{summary}");
    assert!(summary.get("ok") > 100, "{summary}");
    // Every kept-alive connection went from sidecar to sidecar: none was closed, so the
    // app never opened another.
    assert_eq!(summary.get("opened"), 4, "{summary}");
    assert_eq!(summary.get("told_close"), 0, "{summary}");
    // HTTP/2: GOAWAY at each takeover, so a new connection each time, and nothing failed.
    let h2 = h2.stop(&mut client);
    assert_eq!(h2.get("failed"), 0, "{h2}");
    assert!(h2.get("ok") > 100, "{h2}");
    assert!(
        h2.get("opened") > 1,
        "no takeover reached the HTTP/2 connection: {h2}"
    );
    // Each tunnel went from sidecar to sidecar with the bytes in flight: none closed.
    let outside = outside.stop(&mut client);
    assert_eq!(outside.get("failed"), 0, "{outside}");
    assert!(outside.get("ok") > 100, "{outside}");
    assert_eq!(outside.get("opened"), 4, "{outside}");
    eprintln!(
        "client-side upgrades under load: HTTP/1.1 {summary}; HTTP/2 {h2}; TCP tunnels {outside}"
    );
    let log = client.log("sidecar");
    assert!(
        log.contains("the predecessor has handed everything over"),
        "{log}"
    );
}

#[test]
fn the_server_sidecar_is_replaced_five_times_under_load_over_mtls_and_no_request_fails() {
    let (mesh, mut client, mut server) = mesh();
    let op = mesh.operator().unwrap();
    op.write_resource("tls.yaml", &encryption_policy("payments", "mode: Strict"))
        .unwrap();
    wait_until("Strict in force", 15, || {
        if endpoint_tls(&client, &server).is_none() {
            let _ = client.app(&["get", "payments:80"]);
        }
        inbound_tls(&server) == "Strict" && endpoint_tls(&client, &server).is_some()
    });
    let keep = Loop::keep_alive(&mut client);
    let h2 = Loop::h2(&mut client);
    let fresh = start_load(&mut client);
    upgrade_times(&mut server, 5);
    std::thread::sleep(Duration::from_secs(1));
    stop_load(&mut client, fresh);
    let summary = keep.stop(&mut client);
    assert_eq!(summary.get("failed"), 0, "{summary}");
    assert!(summary.get("ok") > 100, "{summary}");
    // The app's connections end at its own sidecar, which the server's upgrade leaves be.
    assert_eq!(summary.get("opened"), 4, "{summary}");
    let h2 = h2.stop(&mut client);
    assert_eq!(h2.get("failed"), 0, "{h2}");
    assert!(h2.get("ok") > 100, "{h2}");
    eprintln!("server-side upgrades under load: HTTP/1.1 {summary}; HTTP/2 {h2}");
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
    let (_mesh, client, _server) = mesh();
    let release = client.proxy_release("braid-proxy-next").unwrap();
    client.upgrade_sidecar(&release, None).unwrap();
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    let first = footprint(&client);
    for _ in 1..20 {
        client.upgrade_sidecar(&release, None).unwrap();
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
    eprintln!("after 1 takeover: {first:?}; after 20: {last:?}");
}

#[test]
fn a_tampered_binary_is_refused_and_the_running_proxy_keeps_serving() {
    let (_mesh, mut client, _server) = mesh();
    let load = start_load(&mut client);
    let before = client.proxy_pid().unwrap();
    let release = client.proxy_release("braid-proxy-next").unwrap();
    // The digest published for the release, and a binary that is not it.
    let published = "0".repeat(64);
    let err = client
        .upgrade_sidecar(&release, Some(&published))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not installed, the running proxy keeps serving"),
        "{err}"
    );
    assert_eq!(client.proxy_pid().unwrap(), before);
    std::thread::sleep(Duration::from_millis(500));
    stop_load(&mut client, load);
}

/// What the running sidecar holds.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    fds: usize,
    listening: Vec<String>,
    rss_kb: u64,
}

/// The running proxy's open descriptors, the addresses it listens on and its RSS, once
/// two readings a moment apart agree on the descriptors (a probe or a config poll may
/// hold one for an instant).
fn footprint(pod: &Pod) -> Footprint {
    let pid = pod.proxy_pid().unwrap();
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
