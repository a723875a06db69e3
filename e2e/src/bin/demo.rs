//! `make demo`: a mesh on this machine — the operator (directory source), a `payments`
//! service of three pods and a client, each a network namespace with the capture rules
//! and the sidecar exactly as the injector writes them — walked through braid's four
//! jobs with the resources in `e2e/demo/`: steering, link encryption, self-healing and
//! access control.
//! Exits non-zero when a step does not behave; cleans up even when interrupted.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use braid_e2e::shop::{self, Load};
use braid_e2e::{Mesh, Operator, Pod, ProxyFlags};

const PAYMENTS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const PAYMENTS: &str = "payments:80";

/// The payments pods: name, labels.
const SERVERS: [(&str, &str); 3] = [
    ("server1", "version: v1, zone: a"),
    ("server2", "version: v2, zone: b"),
    ("server3", "version: v1, zone: a"),
];

const TRANSFERS: &str = include_str!("../../demo/1-transfers-to-group-2.yaml");
const GRAY: &str = include_str!("../../demo/2-gray-release-90-10.yaml");
const MTLS: &str = include_str!("../../demo/3-mtls-rollout.yaml");
const HEALING: &str = include_str!("../../demo/4-self-healing.yaml");
const ACCESS: &str = include_str!("../../demo/5-access-lock-down.yaml");

fn main() -> ExitCode {
    if !is_root() {
        eprintln!(
            "make demo needs root: it creates network namespaces, a bridge and iptables rules.\n\
             Run it as:  sudo make demo"
        );
        return ExitCode::from(2);
    }
    if let Err(e) = braid_e2e::prerequisites() {
        eprintln!(
            "make demo: {e}\n(Debian/Ubuntu: apt-get install iproute2 iptables util-linux tcpdump openssl)"
        );
        return ExitCode::from(2);
    }
    clean_up_on_interrupt();
    let started = Instant::now();
    match run() {
        Ok(()) => {
            println!(
                "\n✔ all four jobs behaved ({:.0} s). Everything the demo made is removed.",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\n✘ the demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Ctrl-C or SIGTERM: remove the namespaces (and the processes in them) and exit.
fn clean_up_on_interrupt() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("\ninterrupted: removing the demo's namespaces and processes");
            braid_e2e::sweep_own();
            std::process::exit(130);
        });
    });
}

/// The mesh and its pods.
struct Demo {
    mesh: Mesh,
    client: Pod,
    /// A second caller, meshed, that the access policy does not name.
    stray: Pod,
    servers: Vec<Pod>,
    /// Where the healing command records what it was asked to do.
    healed: PathBuf,
}

fn run() -> anyhow::Result<()> {
    let mut demo = setup()?;
    let steady = Load::start(&mut demo.client, "steady", PAYMENTS)?;
    steering(&demo)?;
    encryption(&mut demo)?;
    healing(&mut demo)?;
    access(&mut demo)?;
    let summary = steady.stop(&mut demo.client)?;
    println!(
        "\nThe client's steady request loop, all demo long: {} answered, {} failed.",
        summary.ok, summary.failed
    );
    drop(demo.mesh);
    Ok(())
}

/// What `braidctl status` says at the end of an act: each resource, what it does now,
/// and on how many proxies; the demo fails if a resource is not accepted.
fn braidctl_status(demo: &Demo) -> anyhow::Result<()> {
    let dir = operator(demo)?.source_dir().display().to_string();
    let table = demo.mesh.braidctl(&["--dir", &dir, "status"])?;
    println!("  $ braidctl status");
    for line in table.lines() {
        println!("    {line}");
    }
    ensure!(
        !table.contains("   False   "),
        "braidctl status shows a resource that is not accepted:\n{table}"
    );
    Ok(())
}

fn heading(text: &str) {
    println!("\n━━ {text} ━━");
}

fn setup() -> anyhow::Result<Demo> {
    heading("Setting up: operator, 3 payments pods and two callers, each with its sidecar");
    let mut mesh = Mesh::new()?;
    let mut servers = SERVERS
        .iter()
        .map(|(name, _)| mesh.pod(name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = mesh.pod("client")?;
    let mut stray = mesh.pod("stray")?;
    let pods = client.dir().parent().context("pod directory")?.to_owned();
    // The directory mode's healing command: it records what it was asked and stops the
    // pod's app; the demo, as the pod's restart policy would, starts it again.
    let (script, healed) = shop::healing_command(&pods)?;
    mesh.start_operator_with(
        &registry(&servers, &[&client, &stray]),
        &["--healing-command", &script.display().to_string()],
    )?;
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)])?;
    let op = mesh.operator().context("operator")?;
    println!("  {:<8} {:<10} labels", "pod", "address");
    for (pod, (name, labels)) in servers.iter_mut().zip(SERVERS) {
        pod.capture(&ProxyFlags::default())?;
        pod.start_sidecar_streaming(op)?;
        serve(pod, "http", &[])?;
        println!(
            "  {name:<8} {:<10} app: payments, {labels}",
            pod.ip.to_string()
        );
    }
    for caller in [&mut client, &mut stray] {
        caller.capture(&ProxyFlags::default())?;
        caller.start_sidecar_streaming(op)?;
        println!(
            "  {:<8} {:<10} app: {}",
            caller.name,
            caller.ip.to_string(),
            caller.name
        );
    }
    println!(
        "  payments: VIP {PAYMENTS_VIP}:80 → pods' 8080. The client calls http://payments/ in a steady loop."
    );
    Ok(Demo {
        mesh,
        client,
        stray,
        servers,
        healed,
    })
}

/// The operator's registry: the payments service and the pods, each running as the
/// service account of its own name.
fn registry(servers: &[Pod], callers: &[&Pod]) -> String {
    let mut text = format!(
        "services:\n- {{name: payments, namespace: shop, vips: [{PAYMENTS_VIP}], selector: {{app: payments}}, ports: [{{port: 80, targetPort: 8080}}]}}\nworkloads:\n"
    );
    let pods = servers
        .iter()
        .zip(SERVERS)
        .map(|(p, (_, labels))| (p, format!("app: payments, {labels}")))
        .chain(callers.iter().map(|p| (*p, format!("app: {}", p.name))));
    for (pod, labels) in pods {
        text.push_str(&format!(
            "- {{name: {n}, namespace: shop, ips: [{ip}], labels: {{pod: {n}, {labels}}}, serviceAccount: {n}}}\n",
            n = pod.name,
            ip = pod.ip,
        ));
    }
    text
}

/// Starts the demo's HTTP server on 8080 of `pod` (answering its name) under `label`.
fn serve(pod: &mut Pod, label: &str, extra: &[&str]) -> anyhow::Result<()> {
    let name = pod.name.clone();
    let mut args = vec!["http-server", "--port", "8080", "--name", &name];
    args.extend(extra);
    pod.spawn_app(label, &args)?;
    pod.wait_listening(8080)?;
    Ok(())
}

fn operator(demo: &Demo) -> anyhow::Result<&Operator> {
    demo.mesh.operator().context("operator")
}

/// Applies `yaml` (one of `e2e/demo/`) as the operator's file `file` and waits until
/// the client's proxy holds rule `rule` with endpoints in every group.
fn apply_route(demo: &Demo, file: &str, yaml: &str, rule: &str) -> anyhow::Result<()> {
    operator(demo)?.write_resource(file, yaml)?;
    shop::wait_until(
        &format!("rule {rule} to reach the client's proxy"),
        20,
        || {
            let Ok(dump) = demo.client.config_dump() else {
                return false;
            };
            let filled = dump["services"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "payments"))
                .and_then(|s| s["groups"].as_array())
                .is_some_and(|gs| {
                    !gs.is_empty()
                        && gs
                            .iter()
                            .all(|g| g["endpoints"].as_array().is_some_and(|e| !e.is_empty()))
                });
            dump["routes"][0]["rules"][0]["name"] == rule && filled
        },
    )?;
    Ok(())
}

/// Prints who answered a tally, by group.
/// How many calls of a round server1, server2 and server3 answered 200.
fn answered_by(round: &str) -> [usize; 3] {
    ["server1", "server2", "server3"].map(|s| shop::tallied(round, &format!("200 {s}")))
}

fn print_served(tally: &str, groups: &[(&str, &[&str])]) {
    let total: usize = tally
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    println!(
        "    {:<9} {:<17} {:>8} {:>7}",
        "group", "pods", "requests", "share"
    );
    for (group, pods) in groups {
        let n: usize = pods
            .iter()
            .map(|p| shop::tallied(tally, &format!("200 {p}")))
            .sum();
        let share = 100.0 * n as f64 / total.max(1) as f64;
        println!(
            "    {group:<9} {:<17} {n:>8} {share:>6.1}%",
            pods.join(", ")
        );
    }
    let other = shop::not_ok(tally);
    if other > 0 {
        println!("    not 200: {other}");
    }
}

fn steering(demo: &Demo) -> anyhow::Result<()> {
    heading("1/4 Steering (TrafficRoute): business isolation, then a 90/10 gray release");
    println!(
        "  kubectl apply -f e2e/demo/1-transfers-to-group-2.yaml  (header type: transfer → Group_2)"
    );
    apply_route(demo, "route.yaml", TRANSFERS, "transfers")?;
    let client = &demo.client;
    let transfers = shop::tally(client, PAYMENTS, 200, "/", &["type: transfer"])?;
    println!("  200 requests with `type: transfer`:");
    print_served(
        &transfers,
        &[
            ("Group_1", &["server1", "server3"]),
            ("Group_2", &["server2"]),
        ],
    );
    ensure!(
        shop::tallied(&transfers, "200 server2") == 200,
        "transfers did not all reach Group_2: {transfers}"
    );
    let others = shop::tally(client, PAYMENTS, 200, "/", &[])?;
    println!("  200 requests without it:");
    print_served(
        &others,
        &[
            ("Group_1", &["server1", "server3"]),
            ("Group_2", &["server2"]),
        ],
    );
    ensure!(
        shop::tallied(&others, "200 server2") == 0,
        "other requests reached Group_2: {others}"
    );
    println!(
        "  kubectl apply -f e2e/demo/2-gray-release-90-10.yaml  (stable v1: 90, canary v2: 10)"
    );
    apply_route(demo, "route.yaml", GRAY, "gray")?;
    let split = shop::tally(client, PAYMENTS, 2000, "/", &[])?;
    println!("  2,000 requests:");
    print_served(
        &split,
        &[
            ("stable", &["server1", "server3"]),
            ("canary", &["server2"]),
        ],
    );
    let canary = shop::tallied(&split, "200 server2");
    ensure!(
        (140..=260).contains(&canary),
        "the canary got {canary} of 2,000 (want 10% ± 3 points): {split}"
    );
    braidctl_status(demo)?;
    println!("  ✔ steering");
    Ok(())
}

fn encryption(demo: &mut Demo) -> anyhow::Result<()> {
    heading("2/4 Link encryption (EncryptionPolicy): Permissive, automatic rollout, Strict");
    println!(
        "  kubectl apply -f e2e/demo/3-mtls-rollout.yaml  (steps 25/50/100 %, every 2 s, then Strict)"
    );
    let load = Load::start(&mut demo.client, "rollout-load", PAYMENTS)?;
    operator(demo)?.write_resource("tls.yaml", MTLS)?;
    let started = Instant::now();
    let mut seen: Vec<(String, String)> = Vec::new();
    println!("  {:>7}  {:<11} {:>8}", "time", "phase", "callers");
    shop::wait_until("the rollout to reach Strict", 90, || {
        let Ok(op) = operator(demo) else {
            return false;
        };
        let status = op.status("encryptionpolicy", "shop", "shop-mtls");
        let now = shop::rollout_progress(&status);
        if !now.0.is_empty() && seen.last() != Some(&now) {
            println!(
                "  {:>6.1}s  {:<11} {:>7}%",
                started.elapsed().as_secs_f64(),
                now.0,
                now.1
            );
            seen.push(now.clone());
        }
        now.0 == "Strict"
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let summary = load.stop(&mut demo.client)?;
    println!(
        "  requests during the rollout: {} answered, {} failed",
        summary.ok, summary.failed
    );
    ensure!(summary.failed == 0, "requests failed during the rollout");
    let server = demo.servers.first().context("server1")?;
    let metrics = server.metrics()?;
    let mtls = shop::metric_sum(
        &metrics,
        r#"tls="true",peer_identity="spiffe://cluster.local/ns/shop/sa/client""#,
    );
    println!(
        "  server1's proxy: {mtls} requests arrived over mTLS from spiffe://cluster.local/ns/shop/sa/client"
    );
    ensure!(mtls > 0, "no mTLS request reached server1");
    let client_metrics = demo.client.metrics()?;
    println!(
        "  the client's proxy: {} mTLS handshakes, {} failed",
        shop::metric_sum(
            &client_metrics,
            r#"braid_tls_handshakes_total{direction="outbound",result="ok"}"#
        ),
        shop::metric_sum(
            &client_metrics,
            r#"braid_tls_handshakes_total{direction="outbound",result="failed"}"#
        ),
    );
    let after = shop::tally(&demo.client, PAYMENTS, 100, "/", &[])?;
    println!("  100 requests now, all over mTLS:");
    print_served(
        &after,
        &[
            ("stable", &["server1", "server3"]),
            ("canary", &["server2"]),
        ],
    );
    braidctl_status(demo)?;
    println!("  ✔ link encryption: Strict, with no failed request");
    Ok(())
}

fn healing(demo: &mut Demo) -> anyhow::Result<()> {
    heading("3/4 Self-healing (SelfHealing): eject a bad endpoint, restart it, readmit it");
    println!(
        "  kubectl apply -f e2e/demo/4-self-healing.yaml  (3 errors in a row → eject; restart after 3 s)"
    );
    operator(demo)?.write_resource("healing.yaml", HEALING)?;
    shop::wait_until("outlier detection to reach the client's proxy", 20, || {
        demo.client.config_dump().is_ok_and(|d| {
            d["services"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "payments"))
                .is_some_and(|s| !s["outlierDetection"].is_null())
        })
    })?;
    // server3 goes bad: its app answers 500 to everything.
    let server3 = demo.servers.get_mut(2).context("server3")?;
    server3.terminate("http")?;
    // Ok(false): it exited, killed by the signal.
    server3.wait_exit("http", Duration::from_secs(5))?;
    serve(server3, "http-bad", &["--fail-every", "1"])?;
    let pid = server3.pid("http-bad").context("server3's app")?;
    std::fs::write(server3.dir().join("app.pid"), pid.to_string())?;
    println!("  server3's app now answers 500 to everything. Rounds of 50 calls from the client:");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let retries = |pod: &Pod| -> anyhow::Result<u64> {
        Ok(shop::metric_sum(&pod.metrics()?, "braid_retries_total{"))
    };
    let retried_before = retries(&demo.client)?;
    let record = loop {
        let round = shop::tally(&demo.client, PAYMENTS, 50, "/", &[])?;
        let metrics = demo.client.metrics()?;
        let failed = shop::not_ok(&round);
        let [s1, s2, s3] = answered_by(&round);
        println!(
            "  {:>5.1}s  answered by server1 {s1:>2}, server2 {s2:>2}, server3 {s3:>2}; failed {failed}; 500s retried {}; ejections {}",
            started.elapsed().as_secs_f64(),
            retries(&demo.client)?.saturating_sub(retried_before),
            shop::metric_sum(&metrics, "braid_outlier_ejections_total{"),
        );
        if let Ok(text) = std::fs::read_to_string(&demo.healed) {
            break text;
        }
        if Instant::now() > deadline {
            bail!("the operator never acted on server3");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "  {:>5.1}s  the operator ran its healing command: {}",
        started.elapsed().as_secs_f64(),
        record.trim()
    );
    ensure!(
        record.contains("RestartPod shop/server3"),
        "the operator acted on the wrong pod: {record}"
    );
    let server3 = demo.servers.get_mut(2).context("server3")?;
    server3.wait_exit("http-bad", Duration::from_secs(5))?;
    serve(server3, "http-restarted", &[])?;
    println!("  server3 restarted, healthy. Waiting for the client's proxy to readmit it:");
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        std::thread::sleep(Duration::from_millis(500));
        let round = shop::tally(&demo.client, PAYMENTS, 60, "/", &[])?;
        if shop::tallied(&round, "200 server3") > 0 {
            break round;
        }
        if Instant::now() > deadline {
            bail!("server3 was never readmitted");
        }
    };
    // Slow start: the client's proxy eases server3 back into its share of the stable
    // group over 10 s instead of sending it most calls at once (before slow start, the
    // first round after readmission gave it two thirds of them).
    println!(
        "  {:>5.1}s  readmitted; slow start eases it into its share over 10 s. Rounds of 60 calls:",
        started.elapsed().as_secs_f64()
    );
    let [s1, _, s3] = answered_by(&after);
    let first_share = s3 as f64 / (s1 + s3).max(1) as f64;
    let mut round = after;
    for n in 0..5 {
        if n > 0 {
            std::thread::sleep(Duration::from_millis(2500));
            round = shop::tally(&demo.client, PAYMENTS, 60, "/", &[])?;
        }
        let [s1, s2, s3] = answered_by(&round);
        println!(
            "  {:>5.1}s  stable: server1 {s1:>2}, server3 {s3:>2}; canary: server2 {s2:>2}; failed {}",
            started.elapsed().as_secs_f64(),
            shop::not_ok(&round),
        );
        ensure!(
            shop::not_ok(&round) == 0,
            "calls failed after readmission: {round}"
        );
    }
    ensure!(
        first_share < 0.5,
        "server3 took {:.0}% of the stable calls right after readmission: no slow start",
        100.0 * first_share
    );
    let status = operator(demo)?.status("selfhealing", "shop", "payments-healing");
    ensure!(
        status.contains("action: RestartPod"),
        "the SelfHealing's status does not record the restart: {status}"
    );
    println!(
        "  the SelfHealing's status records it (kubectl get selfhealing payments-healing -n shop -o yaml):"
    );
    for line in status_block(&status, "actions:", usize::MAX) {
        println!("    {line}");
    }
    braidctl_status(demo)?;
    println!("  ✔ self-healing");
    Ok(())
}

/// The lines of the block `key` of a status YAML (the key's line and what is indented
/// under it, or list items at its depth), at most `max` of them, unindented.
fn status_block(status: &str, key: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut indent = None;
    for line in status.lines() {
        let depth = line.len() - line.trim_start().len();
        let item = line.trim_start().starts_with("- ");
        match indent {
            None if line.trim_start().starts_with(key) => {
                indent = Some(depth);
                out.push(line.trim_start().to_owned());
            }
            Some(d) if depth > d || (item && depth == d) => out.push(line[d..].to_owned()),
            Some(_) => indent = None,
            None => {}
        }
    }
    out.truncate(max);
    out
}

/// The mode each payments pod's proxy applies to the demo's AccessPolicy.
fn access_modes(demo: &Demo) -> Vec<String> {
    demo.servers
        .iter()
        .map(|s| shop::access_mode(s, "shop/payments-callers"))
        .collect()
}

fn access(demo: &mut Demo) -> anyhow::Result<()> {
    heading("4/4 Access control (AccessPolicy): audit, name the stray caller, enforce");
    println!(
        "  kubectl apply -f e2e/demo/5-access-lock-down.yaml  (only the client may call payments; audit, enforce after 5 s without a refusal)"
    );
    operator(demo)?.write_resource("access.yaml", ACCESS)?;
    shop::wait_until("the payments proxies to audit the policy", 20, || {
        access_modes(demo).iter().all(|m| m == "Audit")
    })?;
    let status = |demo: &Demo| {
        operator(demo).map(|op| op.status("accesspolicy", "shop", "payments-callers"))
    };
    // The stray pod calls in a loop until the status names it.
    let stray = Load::start(&mut demo.stray, "stray-load", PAYMENTS)?;
    shop::wait_until("the status to name the stray caller", 30, || {
        status(demo).is_ok_and(|s| s.contains("sa/stray") && s.contains("pod: shop/stray"))
    })?;
    let now = status(demo)?;
    let summary = stray.stop(&mut demo.stray)?;
    println!(
        "  the stray pod calls payments while the policy audits: {} answered, {} refused",
        summary.ok, summary.failed
    );
    ensure!(summary.failed == 0, "Audit refused the stray caller");
    println!(
        "  its status names who enforcing would refuse (kubectl get ap payments-callers -n shop -o yaml):"
    );
    for line in status_block(&now, "decisions:", 5)
        .into_iter()
        .chain(status_block(&now, "deniedSources:", 8))
    {
        println!("    {line}");
    }
    println!(
        "  the stray pod stops calling; the operator waits for an interval without a refusal:"
    );
    let started = Instant::now();
    shop::wait_until("the policy to be enforced", 60, || {
        status(demo).is_ok_and(|s| shop::status_field(&s, "phase").as_deref() == Some("Enforcing"))
    })?;
    println!(
        "  {:>6.1}s  phase Enforcing (Event Enforced)",
        started.elapsed().as_secs_f64()
    );
    shop::wait_until("the payments proxies to enforce the policy", 20, || {
        access_modes(demo).iter().all(|m| m == "Enforce")
    })?;
    let refused = demo.stray.app(&["get", PAYMENTS])?;
    println!("  the stray pod calls again: {}", refused.trim());
    ensure!(
        refused.starts_with("403"),
        "the stray caller was not refused: {refused}"
    );
    let after = shop::tally(&demo.client, PAYMENTS, 100, "/", &[])?;
    let failed = shop::not_ok(&after);
    println!(
        "  100 requests from the client now: {} answered, {failed} failed",
        100 - failed
    );
    ensure!(failed == 0, "the allowed client was refused: {after}");
    braidctl_status(demo)?;
    println!("  ✔ access control: the stray caller refused, the client never failed");
    Ok(())
}
