//! End-to-end. Self-healing (SelfHealing): a failing endpoint ejected while its group
//! keeps its share, and one that stays bad restarted after the cooldown and readmitted.
//! Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

#[test]
fn a_failing_endpoint_is_ejected_and_the_group_keeps_its_share() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    let mut server2 = mesh.pod("server2").unwrap();
    let mut server3 = mesh.pod("server3").unwrap();
    mesh.start_operator(&registry(&[&server, &server2, &server3], &[&client]))
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();
    let op = mesh.operator().unwrap();
    // One endpoint of three may be ejected (34%); ejections last long enough for the test.
    one_of_three_failing(
        op,
        [&mut server, &mut server2, &mut server3],
        &mut client,
        "  outlierDetection: {consecutiveErrors: 3, baseEjectionTime: 60s, maxEjectionPercent: 34}\n",
    );

    // Retries hide server3's failures; after three of them in a row it is ejected. (How
    // soon the balancer sends server3 three requests depends on the latencies it has
    // seen, so the caller keeps calling until then.)
    let ejections = |metrics: &str| count(metrics, "braid_outlier_ejections_total{");
    let mut first = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let round = tally(&client, 50, "/", &[]);
        assert_eq!(
            tallied(&round, "200 server") + tallied(&round, "200 server2"),
            50,
            "{round}"
        );
        first.push_str(&round);
        let metrics = client.metrics().unwrap();
        if ejections(&metrics) > 0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "server3 never ejected: {metrics}"
        );
    };
    assert_eq!(ejections(&metrics), 1, "{metrics}");
    assert!(
        metrics.contains(&format!(
            r#"braid_outlier_ejections_total{{target="payments.shop:80",endpoint="{}:8080",reason="consecutive_errors"}} 1"#,
            server3.ip
        )),
        "{metrics}"
    );
    // The ejection reaches the operator (which heals what several callers report).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !op.log().lines().any(|l| {
        l.contains("proxy ejected an endpoint") && l.contains(&format!("{}:8080", server3.ip))
    }) {
        assert!(
            Instant::now() < deadline,
            "no ejection report:\n{}",
            op.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ejected, it sees no more requests: even without retries nothing fails now.
    let served = |pod: &Pod| {
        client
            .app(&["get", &pod.addr(8080).to_string(), "--path", "/count"])
            .unwrap()
    };
    let before = served(&server3);
    let second = tally(&client, 100, "/", &[]);
    assert_eq!(
        tallied(&second, "200 server") + tallied(&second, "200 server2"),
        100,
        "{second}"
    );
    assert_eq!(
        served(&server3),
        before,
        "the ejected endpoint still got requests"
    );

    // server2 goes bad too: ejecting it would exceed 34% of the group, so it stays in
    // (the ejection is spared and counted). The balancer prefers whichever of the two
    // answered faster lately, so keep calling until server2's failures are judged.
    server2.terminate("http").unwrap();
    assert!(server2.wait_exit("http", Duration::from_secs(5)).is_ok());
    serve_on_8080(
        &mut server2,
        "http-bad",
        &["--name", "server2", "--fail-every", "1"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut third = String::new();
    let metrics = loop {
        third.push_str(&(tally(&client, 50, "/", &[]) + "\n"));
        let metrics = client.metrics().unwrap();
        if count(&metrics, "braid_outlier_ejections_spared_total{") > 0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "server2 was never judged: {metrics}"
        );
    };
    assert_eq!(ejections(&metrics), 1, "{metrics}");
    // Still in: it keeps getting requests.
    let before = served(&server2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while served(&server2) == before {
        third.push_str(&(tally(&client, 50, "/", &[]) + "\n"));
        assert!(Instant::now() < deadline, "server2 was dropped after all");
    }
    println!("until ejected: {first:?}; after ejection: {second:?}; two bad: {third:?}");
}

#[test]
fn an_endpoint_that_stays_bad_is_restarted_after_the_cooldown_and_readmitted() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    let mut server2 = mesh.pod("server2").unwrap();
    let mut server3 = mesh.pod("server3").unwrap();
    // The directory mode's healing command: it records what it was asked and stops the
    // pod's app, whose service manager (this test) starts it again.
    let pods = server3.dir().parent().unwrap().to_owned();
    let (script, healed) = shop::healing_command(&pods).unwrap();
    mesh.start_operator_with(
        &registry(&[&server, &server2, &server3], &[&client]),
        &["--healing-command", &script.display().to_string()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();
    let op = mesh.operator().unwrap();
    one_of_three_failing(
        op,
        [&mut server, &mut server2, &mut server3],
        &mut client,
        "  outlierDetection: {consecutiveErrors: 3, baseEjectionTime: 5s, maxEjectionPercent: 34}
  healing: {action: RestartPod, cooldown: 3s, minReporters: 1, maxActionsPerHour: 2}
",
    );
    let pid = server3.pid("http").unwrap();
    std::fs::write(server3.dir().join("app.pid"), pid.to_string()).unwrap();

    // server3 fails everything: retries hide it, and the caller keeps calling until
    // server3 is ejected, the report reaches the operator and, after the 3 s cooldown,
    // its command runs. (How many calls server3 gets before its third failure in a row
    // depends on the balancer, so the loop does not count them.)
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut first = String::new();
    let record = loop {
        let round = tally(&client, 50, "/", &[]);
        assert_eq!(
            tallied(&round, "200 server") + tallied(&round, "200 server2"),
            50,
            "{round}"
        );
        first.push_str(&round);
        first.push('\n');
        if let Ok(text) = std::fs::read_to_string(&healed) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the healing command never ran:\n{}\n{}",
            op.log(),
            client.metrics().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let acted_after = started.elapsed();
    assert_eq!(
        record.trim(),
        format!(
            "RestartPod shop/server3 {} {}:8080 shop/payments",
            server3.ip, server3.ip
        )
    );
    assert!(
        acted_after >= Duration::from_secs(3),
        "acted before the cooldown: {acted_after:?}"
    );
    assert!(server3.wait_exit("http", Duration::from_secs(5)).is_ok());
    // The service manager starts it again, healthy now.
    serve_on_8080(&mut server3, "http-restarted", &["--name", "server3"]);
    // The action is in the SelfHealing's status.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = op.status("selfhealing", "shop", "payments");
        if status.contains("action: RestartPod") {
            assert!(status.contains("pod: server3"), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no action in status: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Once its ejection ends the proxy tries it again: it is back in the group.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = String::new();
    while tallied(&after, "200 server3") == 0 {
        assert!(
            Instant::now() < deadline,
            "server3 never came back: {after}\n{}",
            client.metrics().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
        after = tally(&client, 30, "/", &[]);
    }
    assert_eq!(shop::not_ok(&after), 0, "{after}");
    let metrics = client.metrics().unwrap();
    assert!(
        count(&metrics, "braid_outlier_returns_total") >= 1,
        "{metrics}"
    );
    // Acted on once: the restarted endpoint is not reported again.
    std::thread::sleep(Duration::from_secs(4));
    // The action is counted in the operator's metrics, as its Event.
    let m = op.metrics();
    assert!(
        m.contains(r#"braid_operator_events_total{kind="SelfHealing",reason="PodRestarted",type="Normal"} 1"#),
        "{m}"
    );
    assert_eq!(
        std::fs::read_to_string(&healed).unwrap().lines().count(),
        1,
        "{}",
        op.log()
    );
    println!("acted after {acted_after:?}; before: {first:?}; after: {after:?}");
}
