//! End-to-end. `make demo` as a user runs it: the walkthrough of its four jobs exits
//! zero. Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn the_demo_walks_through_its_four_jobs_and_exits_zero() {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let out = std::process::Command::new(dir.join("braid-demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "✔ steering",
        "✔ link encryption",
        "✔ self-healing",
        "✔ access control",
    ] {
        assert!(stdout.contains(step), "{stdout}");
    }
    assert!(
        stdout.contains("requests during the rollout:") && stdout.contains(", 0 failed"),
        "{stdout}"
    );
    // Each act ends with what braidctl shows of it.
    assert_eq!(stdout.matches("$ braidctl status").count(), 4, "{stdout}");
}
