//! End-to-end: the operator as the shipped install runs it — several replicas on one
//! directory (a Lease file, the leader's status read back, reports relayed), proxies
//! split across them, a leader that steps down mid-rollout, and every replica killed and
//! started again after Strict; and an enforced AccessPolicy that stays enforced through
//! a failover and a full restart. Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use braid_e2e::{Mesh, Pod, ProxyFlags, shop};

const PAYMENTS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const REPLICAS: u16 = 3;

fn registry(server: &Pod, clients: &[Pod]) -> String {
    let mut text = format!(
        "services:
- {{name: payments, namespace: shop, vips: [{PAYMENTS_VIP}], selector: {{app: payments}}, ports: [{{port: 80, targetPort: 8080}}]}}
workloads:
- {{name: {n}, namespace: shop, ips: [{ip}], labels: {{app: payments}}, serviceAccount: {n}}}
",
        n = server.name,
        ip = server.ip
    );
    for c in clients {
        text.push_str(&format!(
            "- {{name: {n}, namespace: shop, ips: [{ip}], labels: {{app: client}}, serviceAccount: {n}}}\n",
            n = c.name,
            ip = c.ip
        ));
    }
    text
}

/// What every proxy holds of the rollout: the server's inbound mode, then each client's
/// (mode, percent) for the server's endpoint.
#[derive(Clone, Debug, PartialEq)]
struct Held {
    server: String,
    clients: Vec<Option<(String, u64)>>,
}

fn held(server: &Pod, clients: &[Pod]) -> Held {
    Held {
        server: shop::inbound_tls(server).unwrap(),
        clients: clients
            .iter()
            .map(|c| shop::endpoint_tls(c, "payments", server).unwrap())
            .collect(),
    }
}

/// How protected a mode is: a restart or failover must never move a proxy down this.
fn rank(mode: &str) -> u8 {
    match mode {
        "Strict" => 2,
        "Permissive" => 1,
        _ => 0,
    }
}

/// Watches every proxy's config while `check` is polled: panics if any proxy's
/// protection (mode, then percent) ever goes down.
struct Watch {
    best: Option<Held>,
    seen: Vec<(f64, Held)>,
    started: Instant,
}

impl Watch {
    fn new() -> Self {
        Self {
            best: None,
            seen: Vec::new(),
            started: Instant::now(),
        }
    }

    fn sample(&mut self, server: &Pod, clients: &[Pod]) -> Held {
        let now = held(server, clients);
        if self.seen.last().map(|(_, h)| h) != Some(&now) {
            println!("{:>5.1} s: {now:?}", self.started.elapsed().as_secs_f64());
            self.seen
                .push((self.started.elapsed().as_secs_f64(), now.clone()));
        }
        if let Some(best) = &self.best {
            assert!(
                rank(&now.server) >= rank(&best.server),
                "the server's protection went down: {:#?}",
                self.seen
            );
            for (b, n) in best.clients.iter().zip(&now.clients) {
                let level =
                    |h: &Option<(String, u64)>| h.as_ref().map_or((0, 0), |(m, p)| (rank(m), *p));
                assert!(
                    level(n) >= level(b),
                    "a client's protection went down: {:#?}",
                    self.seen
                );
            }
        }
        self.best = Some(now.clone());
        now
    }
}

fn leader(ops: &[braid_e2e::Operator]) -> Option<usize> {
    ops.iter().position(|o| o.leads())
}

/// Asserts that `operator`, since its last start, started no rollout over: `what` names
/// the one that had finished before the restart.
fn never_started_over(operator: &braid_e2e::Operator, what: &str) {
    let log = operator.log();
    let last_start = log.rfind("braid-operator running").unwrap_or(0);
    assert!(
        !log[last_start..].contains("RolloutStarted"),
        "a restart must never start {what} over: {}",
        &log[last_start..]
    );
}

/// The `applied/targeted` a status shows, from its `proxies:` block.
fn proxies(status: &str) -> (String, String) {
    (
        shop::status_field(status, "applied").unwrap_or_default(),
        shop::status_field(status, "targeted").unwrap_or_default(),
    )
}

/// A server `payments-0` and `replicas` clients, each client streaming from its own
/// replica (the server from the first), the server answering HTTP on 8080.
fn mesh_on_replicas(replicas: u16) -> (Mesh, Pod, Vec<Pod>) {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("payments-0").unwrap();
    let mut clients: Vec<Pod> = (0..replicas)
        .map(|i| mesh.pod(&format!("client-{i}")).unwrap())
        .collect();
    let registry = registry(&server, &clients);
    mesh.start_operators(&registry, replicas, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();
    server.capture(&ProxyFlags::default()).unwrap();
    server
        .start_sidecar_streaming(&mesh.operators()[0])
        .unwrap_or_else(|e| panic!("{e}"));
    server
        .spawn_app(
            "http",
            &["http-server", "--port", "8080", "--name", "payments"],
        )
        .unwrap();
    server.wait_listening(8080).unwrap();
    for (i, client) in clients.iter_mut().enumerate() {
        client.capture(&ProxyFlags::default()).unwrap();
        client
            .start_sidecar_streaming(&mesh.operators()[i])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Each client's app calls payments, so its sidecar holds the service (and carries
    // its routes); `/count` is not counted by the server.
    for client in &clients {
        shop::wait_until(&format!("{} to hold payments", client.name), 15, || {
            let _ = client.app(&["get", "payments:80", "--path", "/count"]);
            client.config_dump().is_ok_and(|d| {
                d["services"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["name"] == "payments"))
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    (mesh, server, clients)
}

const ROUTE: &str = "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: payments, namespace: shop}\nspec: {host: payments, rules: [{name: all}]}\n";

fn route_counts(mesh: &mut Mesh) -> (String, String) {
    proxies(&mesh.operators()[0].status("trafficroute", "shop", "payments"))
}

#[test]
fn applied_counts_every_proxy_with_one_or_two_replicas() {
    for replicas in [1, 2] {
        let (mut mesh, _server, _clients) = mesh_on_replicas(replicas);
        mesh.operators()[0]
            .write_resource("route.yaml", ROUTE)
            .unwrap();
        // The proxies carrying the route: the clients, which call payments.
        let all = replicas.to_string();
        shop::wait_until(&format!("{all} of {all} callers counted"), 20, || {
            route_counts(&mut mesh) == (all.clone(), all.clone())
        })
        .unwrap_or_else(|e| panic!("{replicas} replicas: {e}: {:?}", route_counts(&mut mesh)));
        // A change reaches them all and is counted again.
        mesh.operators()[0]
            .write_resource("route.yaml", &ROUTE.replace("name: all", "name: every"))
            .unwrap();
        shop::wait_until("the change counted", 20, || {
            let status = mesh.operators()[0].status("trafficroute", "shop", "payments");
            shop::status_field(&status, "observedGeneration").as_deref() == Some("2")
                && proxies(&status) == (all.clone(), all.clone())
        })
        .unwrap_or_else(|e| panic!("{replicas} replicas: {e}: {:?}", route_counts(&mut mesh)));
    }
}

#[test]
fn a_rollout_survives_failover_and_a_full_restart_with_proxies_on_every_replica() {
    let (mut mesh, server, mut clients) = mesh_on_replicas(REPLICAS);

    // applied == targeted (the three clients, which hold payments), though they stream
    // from replicas that may not lead.
    mesh.operators()[0]
        .write_resource("route.yaml", ROUTE)
        .unwrap();
    shop::wait_until("the route applied by all 3 callers", 20, || {
        route_counts(&mut mesh) == ("3".into(), "3".into())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", route_counts(&mut mesh)));

    let mut loads: Vec<shop::Load> = clients
        .iter_mut()
        .map(|c| shop::Load::start(c, "load", "payments:80").unwrap())
        .collect();
    mesh.operators()[0]
        .write_resource(
            "tls.yaml",
            "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: payments, namespace: shop}\nspec: {selector: {matchLabels: {app: payments}}, mode: Permissive, rollout: {percent: 0, auto: {steps: [50, 100], interval: 3s, enforceStrict: true}}}\n",
        )
        .unwrap();
    let mut watch = Watch::new();
    let status =
        |mesh: &mut Mesh| mesh.operators()[0].status("encryptionpolicy", "shop", "payments");

    // Halfway, the leader is deleted (SIGTERM, as Kubernetes does) and comes back.
    shop::wait_until("the rollout at 50 %", 30, || {
        watch.sample(&server, &clients);
        shop::rollout_progress(&status(&mut mesh)).1 == "50"
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let first = leader(mesh.operators()).expect("a leader");
    println!("terminating the leader, {}", mesh.operators()[first].name);
    mesh.operators()[first].terminate().unwrap();
    shop::wait_until("another replica to lead", 10, || {
        watch.sample(&server, &clients);
        leader(mesh.operators()).is_some_and(|l| l != first)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    mesh.operators()[first].restart().unwrap();
    let second = leader(mesh.operators()).expect("a leader");
    shop::wait_until("Strict", 60, || {
        let held = watch.sample(&server, &clients);
        held.server == "Strict"
            && held
                .clients
                .iter()
                .all(|c| c.as_ref().is_some_and(|(m, p)| m == "Strict" && *p == 100))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", status(&mut mesh)));
    let log = mesh.operators()[second].log();
    assert!(
        log.contains("RolloutResumed"),
        "the new leader resumed, not started over: {log}"
    );
    assert!(log.contains("StrictEnforced"), "{log}");
    assert_eq!(shop::rollout_progress(&status(&mut mesh)).0, "Strict");
    // The new leader's metrics show the rollout it finished; the other replica's show
    // none, so a sum over replicas is the leader's.
    shop::wait_until("the leader's metrics to show Strict", 10, || {
        watch.sample(&server, &clients);
        mesh.operators()[second]
            .metrics()
            .contains(r#"braid_operator_encryption_phase{policy="shop/payments",phase="Strict"} 1"#)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for (i, op) in mesh
        .operators()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != second)
    {
        let m = op.metrics();
        assert!(
            !m.contains("braid_operator_encryption_phase{"),
            "replica {i} does not lead: {m}"
        );
    }

    // Every replica dies at once (a node lost), then all come back.
    for op in mesh.operators().iter_mut() {
        op.kill();
    }
    for _ in 0..10 {
        watch.sample(&server, &clients);
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..usize::from(REPLICAS) {
        mesh.operators()[i].restart().unwrap();
        watch.sample(&server, &clients);
    }
    // Proxies reconnect (backoff) and the restarted operators serve them: still Strict,
    // and counted as applied again.
    let reconnected = Instant::now();
    shop::wait_until("every proxy counted after the restart", 30, || {
        watch.sample(&server, &clients);
        route_counts(&mut mesh) == ("3".into(), "3".into())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", route_counts(&mut mesh)));
    println!(
        "all 3 callers counted {:.1} s after the restart",
        reconnected.elapsed().as_secs_f64()
    );
    for _ in 0..20 {
        watch.sample(&server, &clients);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(watch.best.as_ref().unwrap().server, "Strict");
    assert_eq!(shop::rollout_progress(&status(&mut mesh)).0, "Strict");
    let restarted_leader = leader(mesh.operators()).expect("a leader after the restart");
    never_started_over(&mesh.operators()[restarted_leader], "a finished rollout");

    for (client, load) in clients.iter_mut().zip(loads.drain(..)) {
        let summary = load.stop(client).unwrap();
        assert_eq!(summary.failed, 0, "{}: {summary:?}", client.name);
        assert!(summary.ok > 50, "{}: {summary:?}", client.name);
    }
}

/// The mode the server's proxy applies for the AccessPolicy `shop/callers`.
fn access_mode(server: &Pod) -> String {
    shop::access_mode(server, "shop/callers")
}

#[test]
fn an_enforced_access_policy_stays_enforced_across_failover_and_a_full_restart() {
    let (mut mesh, server, mut clients) = mesh_on_replicas(2);
    let mut loads: Vec<shop::Load> = clients
        .iter_mut()
        .map(|c| shop::Load::start(c, "load", "payments:80").unwrap())
        .collect();
    mesh.operators()[0]
        .write_resource(
            "access.yaml",
            "apiVersion: braid.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: callers, namespace: shop}\nspec: {selector: {matchLabels: {app: payments}}, mode: Audit, rollout: {interval: 5s, minRequests: 5}, rules: [{}]}\n",
        )
        .unwrap();
    let status = |mesh: &mut Mesh| mesh.operators()[0].status("accesspolicy", "shop", "callers");
    shop::wait_until("the rollout to enforce", 60, || {
        access_mode(&server) == "Enforce"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", status(&mut mesh)));
    // From here on, the server's proxy must never hold Audit again.
    let enforced = |what: &str| {
        let mode = access_mode(&server);
        assert_eq!(mode, "Enforce", "protection lowered {what}");
    };

    let first = leader(mesh.operators()).expect("a leader");
    println!("killing the leader, {}", mesh.operators()[first].name);
    mesh.operators()[first].kill();
    shop::wait_until("another replica to lead", 15, || {
        enforced("during the failover");
        leader(mesh.operators()).is_some_and(|l| l != first)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let second = leader(mesh.operators()).expect("a leader");
    shop::wait_until("the new leader to resume the rollout", 15, || {
        enforced("after the failover");
        mesh.operators()[second].log().contains("RolloutResumed")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", mesh.operators()[second].log()));
    mesh.operators()[first].restart().unwrap();

    // Every replica dies at once, then all come back.
    for op in mesh.operators().iter_mut() {
        op.kill();
    }
    enforced("with no operator running");
    for i in 0..2 {
        mesh.operators()[i].restart().unwrap();
        enforced("while the operators restart");
    }
    for _ in 0..30 {
        enforced("after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarted = leader(mesh.operators()).expect("a leader after the restart");
    shop::wait_until("the status to show Enforcing", 15, || {
        shop::status_field(&status(&mut mesh), "phase").as_deref() == Some("Enforcing")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    never_started_over(&mesh.operators()[restarted], "an enforced policy's rollout");
    for (client, load) in clients.iter_mut().zip(loads.drain(..)) {
        let summary = load.stop(client).unwrap();
        assert_eq!(summary.failed, 0, "{}: {summary:?}", client.name);
    }
}

/// `braidctl proxy-status`'s line for `pod`, asked of `admins`.
fn proxy_line(mesh: &Mesh, admins: &[String], pod: &str) -> String {
    let dir = mesh.operator().unwrap().source_dir().display().to_string();
    let out = mesh
        .braidctl(&[
            "--dir",
            &dir,
            "--operator",
            &admins.join(","),
            "proxy-status",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .find(|l| l.starts_with(&format!("shop/{pod} ")))
        .unwrap_or_else(|| panic!("no {pod} in:\n{out}"))
        .to_owned()
}

#[test]
fn braidctl_sees_proxies_on_every_replica_and_through_a_failover() {
    let (mut mesh, _server, clients) = mesh_on_replicas(2);
    let admins: Vec<String> = mesh
        .operators()
        .iter()
        .map(|o| o.admin.to_string())
        .collect();
    let dir = mesh.operators()[0].source_dir().display().to_string();
    // Each proxy is current, and shown on the replica it streams from: the leader says
    // what it holds (the other relays its reports), its own replica since when.
    shop::wait_until("every proxy current on both replicas", 15, || {
        ["payments-0", "client-0", "client-1"]
            .iter()
            .all(|p| proxy_line(&mesh, &admins, p).contains(" current "))
    })
    .unwrap_or_else(|e| {
        let out = mesh.braidctl(&[
            "--dir",
            &dir,
            "--operator",
            &admins.join(","),
            "-o",
            "wide",
            "proxy-status",
        ]);
        panic!("{e}: {out:?}")
    });
    assert!(proxy_line(&mesh, &admins, "client-0").contains("operator-0 ("));
    assert!(proxy_line(&mesh, &admins, "client-1").contains("operator-1 ("));

    // The leader dies; the other leads. A change reaches the proxies streaming from the
    // survivor; those of the dead replica keep their config and are named.
    let first = leader(mesh.operators()).expect("a leader");
    let survivor = 1 - first;
    let (gone, kept) = (&clients[first].name, &clients[survivor].name);
    mesh.operators()[first].kill();
    // The dead leader's Lease runs out first (15 s from its last renewal).
    shop::wait_until("the other replica to lead", 40, || {
        leader(mesh.operators()) == Some(survivor)
    })
    .unwrap_or_else(|e| {
        let lease = std::fs::read_to_string(
            mesh.operators()[0]
                .source_dir()
                .join(".status/lease-braid-operator.json"),
        );
        panic!("{e}: first {first}, {lease:?}")
    });
    mesh.operators()[survivor]
        .write_resource("route.yaml", ROUTE)
        .unwrap();
    // The survivor streams the change to its own proxies at once; the dead replica's
    // keep what they hold. The survivor never heard from those (they reported to the
    // old leader), so it cannot say which version they hold: not current, not connected.
    shop::wait_until("the change on the survivor's proxies", 20, || {
        proxy_line(&mesh, &admins, kept).contains(" current ")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let line = proxy_line(&mesh, &admins, gone);
    println!("{line}");
    assert!(
        !line.contains(" current ") && line.contains("not connected"),
        "{line}"
    );
    // The survivor may publish once more as it settles (a reconciliation after taking
    // the lead): its proxy is current again once that lands, not at one instant.
    shop::wait_until("the survivor's proxy current", 20, || {
        proxy_line(&mesh, &admins, kept).contains(" current ")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", proxy_line(&mesh, &admins, kept)));

    // The replica comes back; its proxies reconnect and catch up.
    mesh.operators()[first].restart().unwrap();
    shop::wait_until("the route on 2/2 callers", 30, || {
        mesh.braidctl(&["--dir", &dir, "status"]).is_ok_and(|t| {
            t.lines()
                .any(|l| l.contains("TrafficRoute") && l.ends_with("2/2"))
        })
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let line = proxy_line(&mesh, &admins, gone);
    assert!(
        line.contains(" current ") && line.contains(&format!("operator-{first} (")),
        "{line}"
    );
}
