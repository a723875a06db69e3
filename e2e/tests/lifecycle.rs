//! End-to-end. A pod's life around its proxy: SIGTERM drains in-flight requests, and
//! without native sidecars the preStop hook keeps the proxy until the app has exited.
//! Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

#[test]
fn sigterm_lets_the_in_flight_request_finish_and_refuses_new_connections() {
    let (_mesh, mut client, _server) = mesh();
    client
        .spawn_app("slow", &["get", "payments:80", "--path", "/slow"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    client.terminate("sidecar").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let refused = client.app(&["get", "payments:80"]);
    // Refused at once, not taken into a backlog nobody accepts from.
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("Connection refused")),
        "a draining sidecar still accepted a connection: {refused:?}"
    );
    assert!(
        client.wait_exit("slow", Duration::from_secs(10)).unwrap(),
        "{}",
        client.log("slow")
    );
    assert_eq!(client.log("slow").trim(), "200 server slow");
    assert!(
        client
            .wait_exit("sidecar", Duration::from_secs(10))
            .unwrap(),
        "{}",
        client.log("sidecar")
    );
}

#[test]
fn without_native_sidecars_the_pre_stop_hook_keeps_the_proxy_until_the_app_has_exited() {
    // Pod termination on a cluster without native sidecars: every container is told to
    // stop at once. The proxy's preStop hook (the injector's own command) must hold the
    // proxy's SIGTERM back while the app still serves and still calls out.
    let (_mesh, mut client, _server) = mesh();
    serve_http(&mut client, "client");
    let stop = start_load(&mut client);
    client.spawn_pre_stop_hook("pre-stop", &[8080]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        client.is_running("pre-stop").unwrap(),
        "the hook returned while the app was busy: {}",
        client.log("pre-stop")
    );
    // The app's last calls, made while it shuts down, all get through.
    stop_load(&mut client, stop);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        client.is_running("pre-stop").unwrap(),
        "the hook returned while the app still listened: {}",
        client.log("pre-stop")
    );
    client.terminate("http").unwrap();
    assert!(
        client
            .wait_exit("pre-stop", Duration::from_secs(10))
            .unwrap(),
        "{}",
        client.log("pre-stop")
    );
    assert!(client.log("pre-stop").contains("the app has exited"));
    // Only now does the kubelet signal the proxy, which has nothing left to drain.
    client.terminate("sidecar").unwrap();
    assert!(
        client
            .wait_exit("sidecar", Duration::from_secs(10))
            .unwrap(),
        "{}",
        client.log("sidecar")
    );
}
