//! `braid-proxy supervise` and `braid-proxy upgrade` on a host: the supervisor stays, its
//! proxy child is replaced by a verified binary without a kept-alive connection noticing,
//! and a tampered or broken binary changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use sha2::{Digest, Sha256};
use support::*;
use tokio::net::TcpStream;

struct Supervised {
    child: Child,
    dir: tempfile::TempDir,
    admin: std::net::SocketAddr,
    _config: tempfile::NamedTempFile,
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its proxy child, orphaned by the kill.
        let _ = Command::new("pkill")
            .args(["-f", &self.dir.path().display().to_string()])
            .status();
    }
}

async fn supervised(front: std::net::SocketAddr) -> Supervised {
    let backend = http_backend("a").await;
    let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "version: s1\nlisteners:\n{}",
            listener("web", front, backend, "http1")
        ),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = free_addr();
    let child = Command::new(proxy_bin())
        .args(["supervise", "--dir"])
        .arg(dir.path().join("run"))
        .arg("--")
        .args(["--config"])
        .arg(config.path())
        .args(["--no-capture", "--drain-timeout-secs", "10"])
        .args(["--admin-addr", &admin.to_string()])
        .args(["--health-addr", &free_addr().to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    braid_proxy::lifecycle::wait_ready::wait(admin, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    Supervised {
        child,
        dir,
        admin,
        _config: config,
    }
}

fn upgrade(s: &Supervised, binary: &Path, sha256: Option<&str>) -> Output {
    let mut cmd = Command::new(proxy_bin());
    cmd.args(["upgrade", "--dir"])
        .arg(s.dir.path().join("run"))
        .arg("--binary")
        .arg(binary);
    if let Some(d) = sha256 {
        cmd.args(["--sha256", d]);
    }
    cmd.output().unwrap()
}

fn digest(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The proxy child's pid, from the supervisor's children.
fn proxy_pid(s: &Supervised) -> String {
    let pid = s.child.id();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A copy of the proxy binary, as a new release would arrive.
fn new_release(dir: &Path) -> PathBuf {
    let path = dir.join("braid-proxy-next");
    std::fs::copy(proxy_bin(), &path).unwrap();
    path
}

#[tokio::test]
async fn the_supervisor_swaps_its_proxy_for_a_verified_binary_and_refuses_a_tampered_one() {
    let front = free_addr();
    let mut s = supervised(front).await;
    let mut conn = TcpStream::connect(front).await.unwrap();
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
    let first = proxy_pid(&s);
    let release = new_release(s.dir.path());

    // Tampered with (or another build): its digest is not the one given.
    let wrong = "0".repeat(64);
    let out = upgrade(&s, &release, Some(&wrong));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not installed, the running proxy keeps serving"),
        "{stderr}"
    );
    assert_eq!(proxy_pid(&s), first);
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");

    // The release as published: it takes over, and the connection goes on.
    let out = upgrade(&s, &release, Some(&digest(&release)));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("upgraded: proxy pid {first} -> ")),
        "{stdout}"
    );
    let second = proxy_pid(&s);
    assert_ne!(second, first);
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
    let installed = || {
        std::fs::read_dir(s.dir.path().join("run/bin"))
            .unwrap()
            .count()
    };
    assert_eq!(installed(), 1);

    // And back (a downgrade is the same move).
    let out = upgrade(&s, &proxy_bin(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(proxy_pid(&s), second);
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
    // One binary installed at a time: the one replaced is gone.
    assert_eq!(installed(), 1);

    // SIGTERM reaches the proxy, which drains; the supervisor exits with its status.
    let (status, _, close) = exchange(&mut conn, "/").await;
    assert_eq!((status.as_str(), close), ("HTTP/1.1 200 OK", false));
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    let code = s.child.wait().unwrap();
    assert!(code.success(), "{code}");
}

#[tokio::test]
async fn a_new_binary_that_dies_at_start_leaves_the_running_proxy_serving() {
    let front = free_addr();
    let s = supervised(front).await;
    let first = proxy_pid(&s);
    let broken = s.dir.path().join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    let out = upgrade(&s, &broken, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("exited (exit status: 3) before"),
        "{stderr}"
    );
    assert_eq!(proxy_pid(&s), first);
    let mut conn = TcpStream::connect(front).await.unwrap();
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
    let (status, _) = {
        let resp = http1_get(s.admin, "admin", "/ready").await;
        (resp.status(), ())
    };
    assert_eq!(status, 200);
}
