//! `make bench-scale`: config distribution at mesh scale, measured on real processes.
//!
//! Generates a mesh (services × endpoints, TrafficRoutes, SelfHealings,
//! EncryptionPolicies) for the directory source, starts the real `braid-operator` on it
//! and as many real `braid-proxy` processes as asked (no capture: each on its own admin
//! and health ports, streaming from the operator as a sidecar does), then adds one
//! endpoint at a time and reports what each change cost: how long until every proxy
//! applied it, how many proxies received a config and how many bytes were sent, the
//! operator's `/healthz` latency meanwhile, and whether any stream dropped. Then it
//! restarts the operator and times the proxies' reconnection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

/// What to generate and run.
#[derive(Parser, Debug)]
#[command(name = "braid-bench-scale")]
struct Args {
    /// Services in the mesh.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints (workloads) per service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Real proxies started (one workload of each of the first services).
    #[arg(long, default_value_t = 50)]
    proxies: usize,
    /// TrafficRoutes (a 90/10 split each, on the first services).
    #[arg(long, default_value_t = 100)]
    routes: usize,
    /// SelfHealings.
    #[arg(long, default_value_t = 10)]
    healings: usize,
    /// EncryptionPolicies (Permissive, one service's pods each).
    #[arg(long, default_value_t = 5)]
    policies: usize,
    /// Services each proxy calls (its workload's `outboundScope`); 0: every proxy holds
    /// every service (`--services all`), as before on-demand discovery.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Endpoints added one by one, each measured.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Where braid-operator and braid-proxy are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// How long one change may take to reach every proxy.
    #[arg(long, default_value = "180")]
    change_timeout_secs: u64,
}

const NS: &str = "mesh";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.proxies > args.services {
        bail!(
            "--proxies {}: at most --services ({})",
            args.proxies,
            args.services
        );
    }
    if args.calls >= args.services {
        bail!(
            "--calls {}: fewer than --services ({})",
            args.calls,
            args.services
        );
    }
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let mesh = dir.path().join("mesh");
    std::fs::create_dir_all(&mesh)?;
    let mut registry = registry(&args);
    write_atomically(&mesh.join("registry.yaml"), &registry)?;
    std::fs::write(mesh.join("resources.yaml"), resources(&args))?;
    let tokens = dir.path().join("tokens.yaml");
    let mut lines = String::new();
    for k in 0..args.proxies {
        let token = format!("bench-scale-{k}-0123456789abcdef");
        lines.push_str(&format!(
            "- {{token: {token}, namespace: {NS}, serviceAccount: s{k}, pod: s{k}-0}}\n"
        ));
        std::fs::write(dir.path().join(format!("s{k}.token")), token)?;
    }
    std::fs::write(&tokens, lines)?;

    eprintln!(
        "bench-scale: {} services × {} endpoints, {} routes, {} healings, {} policies; starting the operator",
        args.services, args.endpoints, args.routes, args.healings, args.policies
    );
    let mut operator = OperatorProcess::start(&args.bin_dir, dir.path(), &mesh, &tokens)?;
    let started = Instant::now();
    let mut proxies = Vec::new();
    for k in 0..args.proxies {
        proxies.push(ProxyProcess::start(
            &args.bin_dir,
            dir.path(),
            &operator,
            k,
            args.calls == 0,
        )?);
    }
    eprintln!(
        "bench-scale: {} proxies started; waiting for each to apply its first config",
        proxies.len()
    );
    for p in &proxies {
        p.wait_version(None, Duration::from_secs(args.change_timeout_secs))?;
    }
    let all_ready = started.elapsed();
    // Compact, as the stream carries it.
    let config_bytes =
        serde_json::from_str::<serde_json::Value>(&get(proxies[0].admin, "/config_dump")?.1)
            .map(|v| v.to_string().len())
            .unwrap_or_default();
    std::thread::sleep(Duration::from_secs(2));
    let rss: Vec<u64> = proxies.iter().map(|p| rss_kb(p.child.id())).collect();

    // Idle: nothing changes for 10 s.
    let idle = cpu_share(operator.child.id(), Duration::from_secs(10));

    let mut rows = Vec::new();
    let mut operator_rss = vec![rss_kb(operator.child.id())];
    for n in 0..args.changes {
        let before: Vec<String> = proxies
            .iter()
            .map(ProxyProcess::version)
            .collect::<anyhow::Result<_>>()?;
        let metrics_before = get(operator.admin, "/metrics")?.1;
        // Each change lands on a service `calls` proxies call (every proxy, with all).
        let target = (n + args.calls.max(1)) % args.services;
        let affected: Vec<bool> = (0..proxies.len())
            .map(|k| args.calls == 0 || calls(&args, k).contains(&target))
            .collect();
        registry.push_str(&format!(
            "- {{name: s{target}-added-{n}, namespace: {NS}, ips: [{}], labels: {{app: s{target}, version: v1}}, serviceAccount: s{target}}}\n",
            ip(args.services * args.endpoints + n)
        ));
        let healthz = HealthzProbe::start(operator.admin);
        let cpu0 = cpu_ticks(operator.child.id());
        let t0 = Instant::now();
        write_atomically(&mesh.join("registry.yaml"), &registry)?;
        let mut applied = Vec::new();
        for ((p, old), _) in proxies
            .iter()
            .zip(&before)
            .zip(&affected)
            .filter(|(_, a)| **a)
        {
            let took = p.wait_version(Some(old), Duration::from_secs(args.change_timeout_secs));
            applied.push(took.ok().map(|_| t0.elapsed()));
        }
        // Whatever is still in flight settles.
        std::thread::sleep(Duration::from_millis(500));
        let unaffected_changed = proxies
            .iter()
            .zip(&before)
            .zip(&affected)
            .filter(|((p, old), a)| !**a && p.version().ok().as_ref() != Some(*old))
            .count();
        let cpu = ticks_secs(cpu_ticks(operator.child.id()).saturating_sub(cpu0));
        let (healthz_max, connected_min) = healthz.stop();
        let metrics_after = get(operator.admin, "/metrics")?.1;
        let pushes = counter(&metrics_after, "braid_operator_config_pushes_total")
            - counter(&metrics_before, "braid_operator_config_pushes_total");
        let bytes = counter(&metrics_after, "braid_operator_config_bytes_total")
            - counter(&metrics_before, "braid_operator_config_bytes_total");
        let missed = applied.iter().filter(|a| a.is_none()).count();
        let slowest = applied.iter().flatten().max().copied().unwrap_or_default();
        operator_rss.push(rss_kb(operator.child.id()));
        eprintln!(
            "bench-scale: change {} of {}: every proxy applied in {:.2} s",
            n + 1,
            args.changes,
            slowest.as_secs_f64()
        );
        rows.push(Change {
            affected: applied.len(),
            unaffected_changed,
            slowest,
            missed,
            pushes,
            bytes,
            cpu,
            healthz_max,
            dropped: args.proxies as u64 - connected_min.min(args.proxies as u64),
        });
    }

    // Restart: every proxy reconnects and is current again.
    let versions: Vec<String> = proxies
        .iter()
        .map(ProxyProcess::version)
        .collect::<anyhow::Result<_>>()?;
    let connects_before = count_lines(&operator.log, "proxy connected");
    let refusals_before = count_lines(&operator.log, "proxy refused");
    let t0 = Instant::now();
    operator.restart()?;
    let mut reconnected = Duration::ZERO;
    loop {
        let connected = gauge(
            &get(operator.admin, "/metrics")?.1,
            "braid_operator_connected_proxies",
        );
        if connected as usize >= args.proxies {
            reconnected = t0.elapsed();
            break;
        }
        if t0.elapsed() > Duration::from_secs(args.change_timeout_secs) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let changed_by_restart = proxies
        .iter()
        .zip(&versions)
        .filter(|(p, v)| p.version().ok().as_ref() != Some(*v))
        .count();
    let refusals = count_lines(&operator.log, "proxy refused") - refusals_before;
    let connects = count_lines(&operator.log, "proxy connected") - connects_before;

    print_report(&Report {
        args: &args,
        config_bytes,
        rss,
        all_ready,
        idle,
        operator_rss,
        rows,
        reconnected,
        changed_by_restart,
        refusals,
        connects,
    });
    drop(proxies);
    drop(operator);
    Ok(())
}

/// What one change cost.
struct Change {
    affected: usize,
    unaffected_changed: usize,
    slowest: Duration,
    missed: usize,
    pushes: f64,
    bytes: f64,
    cpu: f64,
    healthz_max: Duration,
    dropped: u64,
}

struct Report<'a> {
    args: &'a Args,
    config_bytes: usize,
    rss: Vec<u64>,
    all_ready: Duration,
    idle: f64,
    operator_rss: Vec<u64>,
    rows: Vec<Change>,
    reconnected: Duration,
    changed_by_restart: usize,
    refusals: usize,
    connects: usize,
}

fn print_report(r: &Report<'_>) {
    let a = r.args;
    let mut rss = r.rss.clone();
    rss.sort_unstable();
    let median = rss.get(rss.len() / 2).copied().unwrap_or_default();
    let max = rss.last().copied().unwrap_or_default();
    let holds = match a.calls {
        0 => "each holding every service".to_owned(),
        n => format!("each calling {n} services"),
    };
    println!(
        "braid bench-scale — {} services × {} endpoints, {} TrafficRoutes, {} SelfHealings, {} EncryptionPolicies; {} real proxies {holds}; directory source",
        a.services, a.endpoints, a.routes, a.healings, a.policies, a.proxies
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| config per sidecar | {:.0} KB |",
        r.config_bytes as f64 / 1024.0
    );
    println!(
        "| sidecar RSS, median / max | {:.1} / {:.1} MB |",
        median as f64 / 1024.0,
        max as f64 / 1024.0
    );
    println!(
        "| start: every proxy applied its first config | {:.1} s |",
        r.all_ready.as_secs_f64()
    );
    println!(
        "| operator idle CPU (10 s, nothing changing) | {:.1} % of a core |",
        r.idle * 100.0
    );
    let rss_mb: Vec<String> = r
        .operator_rss
        .iter()
        .map(|k| format!("{:.0}", *k as f64 / 1024.0))
        .collect();
    println!(
        "| operator RSS, start then after each change | {} MB |",
        rss_mb.join(" → ")
    );
    println!(
        "| operator restart: every proxy reconnected | {:.1} s ({} connects, {} configs changed by it, {} refusals logged) |",
        r.reconnected.as_secs_f64(),
        r.connects,
        r.changed_by_restart,
        r.refusals
    );
    println!();
    println!("One endpoint added (registry.yaml written), per change:");
    println!();
    println!(
        "| change | proxies calling it | all of them applied | not applied | others that changed | configs pushed | bytes sent | per pushed proxy | operator CPU | /healthz max | streams dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, c) in r.rows.iter().enumerate() {
        let per = if c.pushes > 0.0 {
            c.bytes / c.pushes
        } else {
            0.0
        };
        println!(
            "| {} | {} | {:.3} s | {} | {} | {:.0} | {:.1} KB | {:.1} KB | {:.2} s | {:.0} ms | {} |",
            i + 1,
            c.affected,
            c.slowest.as_secs_f64(),
            c.missed,
            c.unaffected_changed,
            c.pushes,
            c.bytes / 1024.0,
            per / 1024.0,
            c.cpu,
            c.healthz_max.as_secs_f64() * 1e3,
            c.dropped
        );
    }
}

/// `registry.yaml`: service `s<i>` (VIP, port 80 → 8080, HTTP) with `endpoints`
/// workloads `s<i>-<j>`, half `version: v1`, half `v2`.
fn registry(a: &Args) -> String {
    let mut out = String::from("services:\n");
    for i in 0..a.services {
        out.push_str(&format!(
            "- {{name: s{i}, namespace: {NS}, vips: [10.96.{}.{}], selector: {{app: s{i}}}, ports: [{{port: 80, targetPort: 8080, protocol: http}}]}}\n",
            i / 256,
            i % 256
        ));
    }
    out.push_str("workloads:\n");
    for i in 0..a.services {
        for j in 0..a.endpoints {
            // The proxies' workloads name the services they call.
            let scope = match (i < a.proxies && j == 0, a.calls) {
                (false, _) | (_, 0) => String::new(),
                (true, _) => {
                    let names: Vec<String> =
                        calls(a, i).iter().map(|c| format!("{NS}/s{c}")).collect();
                    format!(", outboundScope: [{}]", names.join(", "))
                }
            };
            out.push_str(&format!(
                "- {{name: s{i}-{j}, namespace: {NS}, ips: [{}], labels: {{app: s{i}, version: v{}}}, serviceAccount: s{i}{scope}}}\n",
                ip(i * a.endpoints + j),
                1 + j % 2
            ));
        }
    }
    out
}

/// The services proxy `k` calls: the `calls` after its own.
fn calls(a: &Args, k: usize) -> Vec<usize> {
    (1..=a.calls).map(|m| (k + m) % a.services).collect()
}

/// The `n`-th workload's IP, in 10.1.0.0/8 onwards.
fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", 1 + n / 65_536, (n / 256) % 256, n % 256)
}

fn resources(a: &Args) -> String {
    let mut out = String::new();
    for i in 0..a.routes.min(a.services) {
        out.push_str(&format!(
            "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: r{i}, namespace: {NS}}}\nspec:\n  host: s{i}\n  port: 80\n  groups:\n  - {{name: stable, labels: {{version: v1}}}}\n  - {{name: canary, labels: {{version: v2}}}}\n  rules:\n  - name: gray\n    route:\n    - {{group: stable, weight: 90}}\n    - {{group: canary, weight: 10}}\n---\n"
        ));
    }
    for i in 0..a.healings.min(a.services) {
        out.push_str(&format!(
            "apiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {{name: h{i}, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: s{i}}}}}\n  outlierDetection: {{consecutiveErrors: 5, baseEjectionTime: 30s, maxEjectionPercent: 50}}\n---\n"
        ));
    }
    for i in 0..a.policies.min(a.services) {
        out.push_str(&format!(
            "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {{name: p{i}, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: s{i}}}}}\n  mode: Permissive\n---\n"
        ));
    }
    out
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// A port free now on 127.0.0.1.
/// A free loopback port for a process to listen on. Taken in turn from below the
/// ephemeral range: a port the kernel hands out for `:0` is also where hundreds of
/// proxies' outgoing connections get their local ports, and one of them took a
/// proxy's health port between the pick and the bind (`Address already in use`).
fn free_port() -> anyhow::Result<SocketAddr> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    loop {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(port < 32_768, "no free port left below the ephemeral range");
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return Ok(listener.local_addr()?);
        }
    }
}

struct OperatorProcess {
    child: Child,
    command: Command,
    listen: SocketAddr,
    admin: SocketAddr,
    trust: PathBuf,
    log: PathBuf,
}

impl OperatorProcess {
    fn start(bin_dir: &Path, dir: &Path, mesh: &Path, tokens: &Path) -> anyhow::Result<Self> {
        let listen = free_port()?;
        let admin = free_port()?;
        let trust = dir.join("operator-ca.pem");
        let log = dir.join("operator.log");
        let mut command = Command::new(bin_dir.join("braid-operator"));
        command
            .arg("--source")
            .arg(format!("dir:{}", mesh.display()))
            .arg("--bootstrap-tokens")
            .arg(tokens)
            .args([
                "--listen",
                &listen.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ])
            .args([
                "--tls-san",
                "localhost,127.0.0.1",
                "--poll-ms",
                "100",
                "--log-level",
                "info",
            ])
            .arg("--tls-trust-out")
            .arg(&trust)
            // As manifests/operator/deployment.yaml runs it.
            .env("MIMALLOC_PURGE_DELAY", "0");
        let child = spawn(&mut command, &log)?;
        let op = Self {
            child,
            command,
            listen,
            admin,
            trust,
            log,
        };
        op.wait_ready()?;
        Ok(op)
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        while !get(self.admin, "/readyz").is_ok_and(|r| r.0 == 200) {
            if start.elapsed() > Duration::from_secs(300) {
                bail!(
                    "the operator was not ready within 300 s; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn restart(&mut self) -> anyhow::Result<()> {
        terminate(&mut self.child);
        self.child = spawn(&mut self.command, &self.log)?;
        self.wait_ready()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

struct ProxyProcess {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

impl ProxyProcess {
    fn start(
        bin_dir: &Path,
        dir: &Path,
        op: &OperatorProcess,
        k: usize,
        all: bool,
    ) -> anyhow::Result<Self> {
        let admin = free_port()?;
        let health = free_port()?;
        let mut command = Command::new(bin_dir.join("braid-proxy"));
        command
            .arg("run")
            .args([
                "--operator",
                &format!("https://127.0.0.1:{}", op.listen.port()),
            ])
            .arg("--operator-ca")
            .arg(&op.trust)
            .arg("--token-file")
            .arg(dir.join(format!("s{k}.token")))
            .args(["--pod-name", &format!("s{k}-0"), "--pod-namespace", NS])
            .args(["--service-account", &format!("s{k}")])
            .args(["--no-capture", "--workers", "1", "--log-level", "warn"])
            .args(["--services", if all { "all" } else { "on-demand" }])
            .args([
                "--admin-addr",
                &admin.to_string(),
                "--health-addr",
                &health.to_string(),
            ]);
        let log = dir.join(format!("proxy-{k}.log"));
        let child = spawn(&mut command, &log)?;
        Ok(Self { child, admin, log })
    }

    /// The config version in force (empty before the first).
    fn version(&self) -> anyhow::Result<String> {
        let text = get(self.admin, "/metrics")?.1;
        Ok(text
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("braid_config_info{version=\"")?;
                rest.split('"').next().map(str::to_string)
            })
            .unwrap_or_default())
    }

    /// Waits until the version in force is another than `old` (any, with `None`).
    fn wait_version(&self, old: Option<&String>, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(v) = self.version()
                && !v.is_empty()
                && Some(&v) != old
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                // The run's directory goes with it: say what the proxy said.
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "proxy on {} did not apply a new config within {timeout:?}; its log ends:\n{}",
                    self.admin,
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn spawn(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {command:?} (build with `make bench-scale`)"))
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls the operator's `/healthz` (its latency) and `/metrics` (connected proxies)
/// every 50 ms until stopped.
struct HealthzProbe {
    stop: Arc<AtomicBool>,
    worst_us: Arc<AtomicU64>,
    connected_min: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthzProbe {
    fn start(admin: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let worst_us = Arc::new(AtomicU64::new(0));
        let connected_min = Arc::new(AtomicU64::new(u64::MAX));
        let (s, w, c) = (stop.clone(), worst_us.clone(), connected_min.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = get(admin, "/healthz").map(|r| r.0 == 200).unwrap_or(false);
                let took = if ok {
                    t.elapsed()
                } else {
                    Duration::from_secs(3600)
                };
                w.fetch_max(
                    u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                if let Ok((_, text)) = get(admin, "/metrics") {
                    let n = gauge(&text, "braid_operator_connected_proxies") as u64;
                    c.fetch_min(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            worst_us,
            connected_min,
            thread: Some(thread),
        }
    }

    /// The worst `/healthz` latency and the fewest connected proxies seen.
    fn stop(mut self) -> (Duration, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            Duration::from_micros(self.worst_us.load(Ordering::Relaxed)),
            self.connected_min.load(Ordering::Relaxed),
        )
    }
}

/// A plain HTTP/1.0 GET: status and body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A metric's value (the first line with that name, any labels).
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn counter(text: &str, name: &str) -> f64 {
    gauge(text, name)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Clock ticks as seconds (the kernel's USER_HZ, 100 on Linux).
fn ticks_secs(ticks: u64) -> f64 {
    ticks as f64 / 100.0
}

/// The share of one core `pid` used over `window`.
fn cpu_share(pid: u32, window: Duration) -> f64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    ticks_secs(cpu_ticks(pid).saturating_sub(before)) / window.as_secs_f64()
}

fn count_lines(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}
