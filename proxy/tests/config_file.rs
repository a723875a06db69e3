//! What the config file watcher refuses (duplicate keys, invalid UTF-8, deep nesting,
//! oversized files), that each refusal is logged with the file and the reason, and that
//! the last good config stays; and which log levels `--log-level` and `POST /logging`
//! accept. Against the real proxy binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Request;
use support::*;

/// A proxy on a watched config file whose log goes to a file the test reads.
struct Logged {
    child: Child,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Logged {
    /// Starts the proxy on `config` (written to `config.yaml`) and waits until it is ready.
    async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let admin = free_addr();
        let child = Command::new(proxy_bin())
            .args(["run", "--no-capture", "--config-poll-ms", "50"])
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .args(["--admin-addr", &admin.to_string()])
            .args(["--health-addr", &free_addr().to_string()])
            .env("RUST_BACKTRACE", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let proxy = Self { child, admin, dir };
        braid_proxy::lifecycle::wait_ready::wait(admin, Duration::from_secs(10))
            .await
            .unwrap();
        proxy
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the config file atomically, as a ConfigMap update does.
    fn write_config(&self, bytes: impl AsRef<[u8]>) {
        let tmp = self.dir.path().join("config.new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap()
    }

    /// Waits until the log has a line containing every one of `parts`; returns it.
    async fn wait_for_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {parts:?}:\n{}", self.log());
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        admin_request(self.admin, "GET", path).await
    }

    /// The config in force, as `/config_dump` shows it.
    async fn dump(&self) -> serde_json::Value {
        let (status, dump) = self.admin_get("/config_dump").await;
        assert_eq!(status, 200, "{dump}");
        serde_json::from_str(&dump).unwrap()
    }

    /// Writes `config`, then waits until the version it names is in force.
    async fn apply(&self, config: &str, version: &str) {
        self.write_config(config);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.dump().await["version"] != version {
            assert!(Instant::now() < deadline, "{version} never applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn admin_request(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin")
        .body(empty())
        .unwrap();
    let resp = http1_request(admin, req).await.unwrap();
    let status = resp.status().as_u16();
    (status, body_string(resp).await)
}

fn config(version: &str, bind: SocketAddr) -> String {
    format!(
        "version: {version}\nlisteners:\n- name: web\n  bind: {bind}\n  target: {{address: \"127.0.0.1:9\"}}\n  protocol: http1\nservices:\n- name: a\n  namespace: shop\n"
    )
}

/// Asserts that `v1` is still in force with its one listener.
async fn still_v1(proxy: &Logged) {
    let dump = proxy.dump().await;
    assert_eq!(dump["version"], "v1", "{dump}");
    assert_eq!(dump["listeners"].as_array().unwrap().len(), 1, "{dump}");
}

#[tokio::test]
async fn a_duplicate_key_is_refused_with_its_path_and_the_last_good_config_stays() {
    let proxy = Logged::start(&config("v1", free_addr())).await;
    let file = proxy.config_path().display().to_string();

    // The attack: an appended key silently replacing every listener.
    proxy.write_config(config("v2", free_addr()) + "listeners: []\n");
    let line = proxy
        .wait_for_log(&["config refused", &file, "listeners: duplicate key"])
        .await;
    assert!(line.contains("at line 10"), "{line}");
    still_v1(&proxy).await;

    // Deeper in the document, the path names the item.
    proxy.write_config(config("v3", free_addr()).replace("name: a\n", "name: a\n  name: b\n"));
    proxy
        .wait_for_log(&["config refused", &file, "services[0].name: duplicate key"])
        .await;
    still_v1(&proxy).await;

    // JSON (flow style) is checked alike.
    proxy.write_config(r#"{"version": "v4", "listeners": [], "version": "v5"}"#);
    proxy
        .wait_for_log(&["config refused", &file, "version: duplicate key"])
        .await;
    still_v1(&proxy).await;
    assert!(!proxy.log().contains("version=v2"), "{}", proxy.log());

    // A good file still applies afterwards.
    proxy.apply(&config("v6", free_addr()), "v6").await;
}

#[tokio::test]
async fn invalid_utf8_is_refused_and_logged() {
    let proxy = Logged::start(&config("v1", free_addr())).await;
    let mut bytes = config("v2", free_addr()).into_bytes();
    bytes.extend_from_slice(b"# caf\xe9\n");
    proxy.write_config(&bytes);
    let line = proxy
        .wait_for_log(&[
            "config refused",
            &proxy.config_path().display().to_string(),
            "not UTF-8",
        ])
        .await;
    assert!(line.contains("line 10"), "{line}");
    still_v1(&proxy).await;
    proxy.apply(&config("v3", free_addr()), "v3").await;
}

#[tokio::test]
async fn deep_nesting_is_refused_at_once_and_a_newer_file_still_applies() {
    let proxy = Logged::start(&config("v1", free_addr())).await;
    let file = proxy.config_path().display().to_string();
    // 200 KB nested 100k levels deep: the YAML scanner alone spent ~100 s on it.
    let n = 100_000;
    let started = Instant::now();
    proxy.write_config(format!("listeners: {}{}\n", "[".repeat(n), "]".repeat(n)));
    proxy
        .wait_for_log(&["config refused", &file, "nested deeper than 64 levels"])
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    still_v1(&proxy).await;

    // Flow mappings, in JSON, and block style (indentation) too.
    let deep_map = format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    proxy.write_config(&deep_map);
    proxy
        .wait_for_log(&[
            "config refused",
            &file,
            "nested deeper than 64 levels at line 1 column 321",
        ])
        .await;
    let block: String = (0..70)
        .map(|i| format!("{}k:\n", " ".repeat(i + 1)))
        .collect();
    proxy.write_config(format!("version: v2\nnode:\n{block}"));
    proxy
        .wait_for_log(&[
            "config refused",
            &file,
            "node.k.k.k",
            "nested deeper than 64",
        ])
        .await;
    still_v1(&proxy).await;
    proxy.apply(&config("v3", free_addr()), "v3").await;
}

#[tokio::test]
async fn an_oversized_file_is_refused_without_parsing() {
    let proxy = Logged::start(&config("v1", free_addr())).await;
    // Valid YAML (a comment) one byte over the limit.
    let limit = 64 * 1024 * 1024;
    let mut big = config("v2", free_addr()).into_bytes();
    big.push(b'#');
    big.resize(limit + 1, b'x');
    proxy.write_config(&big);
    let line = proxy
        .wait_for_log(&[
            "config refused",
            &proxy.config_path().display().to_string(),
            "larger than the limit of 67108864 bytes",
        ])
        .await;
    assert!(!line.contains("parsing"), "{line}");
    still_v1(&proxy).await;
    // Logged once, not on every poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.log().matches("larger than the limit").count(), 1);
    proxy.apply(&config("v3", free_addr()), "v3").await;
}

#[test]
fn an_unknown_log_level_stops_the_proxy_at_start() {
    let out = Command::new(proxy_bin())
        .args(["run", "--no-capture", "--config", "/nonexistent.yaml"])
        .args(["--log-level", "loud"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--log-level"), "{stderr}");
    assert!(stderr.contains("\"loud\" is not a log level"), "{stderr}");
    assert!(
        stderr.contains("trace, debug, info, warn, error, off"),
        "{stderr}"
    );
    // Before anything else: the config file was never read.
    assert!(!stderr.contains("nonexistent"), "{stderr}");
}

#[tokio::test]
async fn the_logging_endpoint_refuses_an_unknown_level() {
    let proxy = Logged::start(&config("v1", free_addr())).await;
    let (status, body) = admin_request(proxy.admin, "POST", "/logging?level=verbose").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"verbose\" is not a log level"), "{body}");
    assert!(
        body.contains("trace, debug, info, warn, error, off"),
        "{body}"
    );
    let (status, body) =
        admin_request(proxy.admin, "POST", "/logging?level=braid_proxy=loud").await;
    assert_eq!(status, 400, "{body}");

    let (status, body) =
        admin_request(proxy.admin, "POST", "/logging?level=warn,braid_proxy=debug").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin_request(proxy.admin, "POST", "/logging?level=info").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_kubernetes_resource_given_as_the_config_is_named_as_one() {
    let proxy = Logged::start(&config("v1", free_addr())).await;
    proxy.write_config(
        "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: payments}\nspec: {host: payments}\n",
    );
    let log = proxy
        .wait_for_log(&["this is a Kubernetes resource (braid.dev/v1alpha1 TrafficRoute)"])
        .await;
    assert!(log.contains("apply it with kubectl"), "{log}");
    still_v1(&proxy).await;
    // Written to a file, the log has no colour codes.
    assert!(!log.contains('\u{1b}'), "{log}");
}
