//! Test support: the real `braid-proxy` binary on loopback, small HTTP/1.1, HTTP/2 and TCP
//! backends, clients, and a fake operator serving the config stream.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod operator;
pub mod pki;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A free loopback address for a listener the proxy binds later. Ports come from a
/// per-process block below the kernel's ephemeral range, so an outgoing connection can
/// never take a port between this call and the proxy's bind (port 0 could).
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 100) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        if let Ok(l) = StdListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

/// The proxy binary under test.
pub fn proxy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_braid-proxy"))
}

/// A running `braid-proxy run --no-capture`, on a config file it watches or on a
/// (fake) operator's stream.
pub struct Proxy {
    pub child: Child,
    pub admin: SocketAddr,
    /// The health listener (kubelet probes).
    pub health: SocketAddr,
    /// The watched config file (`--config`); none with `--operator`.
    pub config: Option<std::sync::Arc<tempfile::NamedTempFile>>,
}

impl Proxy {
    /// Starts the proxy on `config_yaml` and waits until it is ready.
    pub async fn start(config_yaml: &str) -> Self {
        Self::start_with(config_yaml, &[]).await
    }

    /// [`Proxy::start`] on a config of one explicit listener, `name` on `front`,
    /// forwarding `protocol` to `backend`.
    pub async fn fronting(
        name: &str,
        front: SocketAddr,
        backend: SocketAddr,
        protocol: &str,
    ) -> Self {
        Self::start(&format!(
            "version: t1\nlisteners:\n{}",
            listener(name, front, backend, protocol)
        ))
        .await
    }

    /// [`Proxy::start`] with more `braid-proxy run` arguments.
    pub async fn start_with(config_yaml: &str, extra: &[&str]) -> Self {
        let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(config.path(), config_yaml).unwrap();
        let mut source = vec!["--config".into(), config.path().into()];
        source.extend(["--config-poll-ms".into(), "50".into()]);
        source.extend(extra.iter().map(Into::into));
        let proxy = Self::spawn(source, Some(config), Stdio::null());
        proxy.wait_ready().await;
        proxy
    }

    /// [`Proxy::start_with`], its standard output (the access log) written to `stdout`.
    pub async fn start_writing(config_yaml: &str, extra: &[&str], stdout: &Path) -> Self {
        let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(config.path(), config_yaml).unwrap();
        let mut source = vec!["--config".into(), config.path().into()];
        source.extend(["--config-poll-ms".into(), "50".into()]);
        source.extend(extra.iter().map(Into::into));
        let out = std::fs::File::create(stdout).unwrap();
        let proxy = Self::spawn(source, Some(config), out.into());
        proxy.wait_ready().await;
        proxy
    }

    /// Starts the proxy on `operator`'s stream as pod `shop/web-0` and waits until its
    /// admin port accepts connections, not until it is ready: that takes a config from
    /// the operator.
    pub async fn start_with_operator(operator: &operator::FakeOperator) -> Self {
        let proxy = Self::spawn(operator.proxy_args(), None, Stdio::null());
        let admin = proxy.admin;
        eventually("the admin port", || async move {
            TcpStream::connect(admin).await.is_ok()
        })
        .await;
        proxy
    }

    /// `braid-proxy run --no-capture` with `source_args` choosing the config source.
    fn spawn(
        source_args: Vec<std::ffi::OsString>,
        config: Option<tempfile::NamedTempFile>,
        stdout: Stdio,
    ) -> Self {
        let config = config.map(std::sync::Arc::new);
        Self::spawn_at(source_args, config, stdout, free_addr(), free_addr())
    }

    /// A second proxy on this one's config file and admin and health addresses, with
    /// `extra` arguments (with `--handover-socket`, it takes over from this one); not
    /// waited for.
    pub fn successor(&self, extra: &[&str]) -> Self {
        let config = self.config.clone().expect("a proxy on --config");
        let mut source = vec!["--config".into(), config.path().into()];
        source.extend(["--config-poll-ms".into(), "50".into()]);
        source.extend(extra.iter().map(Into::into));
        Self::spawn_at(source, Some(config), Stdio::null(), self.admin, self.health)
    }

    /// Waits (up to 10 s) for the proxy to exit, and says whether it succeeded.
    pub async fn exited(&mut self) -> bool {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the proxy did not exit within 10 s");
    }

    fn spawn_at(
        source_args: Vec<std::ffi::OsString>,
        config: Option<std::sync::Arc<tempfile::NamedTempFile>>,
        stdout: Stdio,
        admin: SocketAddr,
        health: SocketAddr,
    ) -> Self {
        let child = Command::new(proxy_bin())
            .args(["run", "--no-capture", "--drain-timeout-secs", "10"])
            .args(source_args)
            .args([
                "--admin-addr",
                &admin.to_string(),
                "--health-addr",
                &health.to_string(),
            ])
            .env("RUST_BACKTRACE", "0")
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self {
            child,
            admin,
            health,
            config,
        }
    }

    /// Waits (up to 10 s) until `/ready` answers 200.
    pub async fn wait_ready(&self) {
        braid_proxy::lifecycle::wait_ready::wait(self.admin, Duration::from_secs(10))
            .await
            .unwrap();
    }

    /// Whether `/ready` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        self.admin_get("/ready").await.0 == 200
    }

    /// The `version` of the config in force, as `/config_dump` shows it.
    pub async fn version_in_force(&self) -> String {
        let (status, dump) = self.admin_get("/config_dump").await;
        assert_eq!(status, 200, "{dump}");
        let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
        dump["version"].as_str().unwrap().to_owned()
    }

    /// Replaces the config file.
    pub fn write_config(&self, yaml: &str) {
        let path = self.config.as_ref().expect("a proxy on --config").path();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Waits (up to 10 s) until config `version` is in force, as `/metrics` reports it.
    pub async fn wait_for_version(&self, version: &str) {
        let line = format!(r#"braid_config_info{{version="{version}"}} 1"#);
        let line = &line;
        eventually(&format!("config {version} in force"), || async move {
            self.admin_get("/metrics").await.1.contains(line)
        })
        .await;
    }

    /// GET on the admin port: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = http1_get(self.admin, "admin", path).await;
        let status = resp.status().as_u16();
        (status, body_string(resp).await)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after 10 s. Tests wait
/// for outcomes this way, never for a fixed time.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// The proxy's `x-braid-error` reason on `resp`, empty when it has none.
pub fn braid_error<B>(resp: &Response<B>) -> String {
    resp.headers()
        .get("x-braid-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

pub async fn body_string(resp: Response<Incoming>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

/// One HTTP/1.1 request on a new connection.
pub async fn http1_request(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> hyper::Result<Response<Incoming>> {
    http1_client(addr).await.send_request(req).await
}

/// `GET path` with `host`, on a connection of its own to `addr`.
pub async fn http1_get(addr: SocketAddr, host: &str, path: &str) -> Response<Incoming> {
    http1_request(
        addr,
        Request::get(path)
            .header("host", host)
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap()
}

/// An HTTP/1.1 connection, kept alive for as many requests as are sent on it.
pub async fn http1_client(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// An explicit listener entry of a proxy config: `name` on `bind`, forwarding `protocol`
/// to the fixed address `target`.
pub fn listener(name: &str, bind: SocketAddr, target: SocketAddr, protocol: &str) -> String {
    format!(
        "- name: {name}\n  bind: {bind}\n  target: {{address: \"{target}\"}}\n  protocol: {protocol}\n"
    )
}

/// An HTTP/2 (prior knowledge) connection.
pub async fn http2_client(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP backend (HTTP/1.1 and HTTP/2) answering `<name> <method> <path>`, echoing
/// `x-echo`, and on `/stream` sending three chunks then a `grpc-status: 0` trailer. On
/// `/slow` it waits 1.5 s first.
pub async fn http_backend(name: &'static str) -> SocketAddr {
    http_backend_at("127.0.0.1:0".parse().unwrap(), name).await
}

/// [`http_backend`] bound to `bind` (several loopback IPs can share one port, as the
/// endpoints of a service do).
pub async fn http_backend_at(bind: SocketAddr, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    let line = format!("{name} {} {path}", req.method());
                    let echo = req.headers().get("x-echo").cloned();
                    let hop = req.headers().contains_key("x-hop");
                    if path == "/slow" {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    let body: http_body_util::combinators::BoxBody<
                        Bytes,
                        std::convert::Infallible,
                    > = if path == "/stream" {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        Frames(
                            [
                                Frame::data(Bytes::from("one,")),
                                Frame::data(Bytes::from("two,")),
                                Frame::data(Bytes::from("three")),
                                Frame::trailers(trailers),
                            ]
                            .into(),
                        )
                        .boxed()
                    } else {
                        Full::new(Bytes::from(line)).boxed()
                    };
                    let mut resp = Response::new(body);
                    if let Some(v) = echo {
                        resp.headers_mut().insert("x-echo", v);
                    }
                    if hop {
                        resp.headers_mut()
                            .insert("x-hop-seen", "1".parse().unwrap());
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A body yielding fixed frames (data, then trailers), one per poll.
pub struct Frames(pub std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// A server-speaks-first TCP backend: sends `banner\n`, then echoes one line upper-cased.
pub async fn banner_backend(banner: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                stream
                    .write_all(format!("{banner}\n").as_bytes())
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 1024];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let reply = String::from_utf8_lossy(&buf[..n]).to_uppercase();
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// The Content-Length a raw HTTP/1.1 head declares; 0 when it declares none.
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// One request on a kept-alive connection: the status line, the body, and whether the
/// proxy said it closes.
pub async fn exchange(conn: &mut TcpStream, path: &str) -> (String, String, bool) {
    let request = format!("POST {path} HTTP/1.1\r\nhost: web\r\ncontent-length: 2\r\n\r\nhi");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed under a request: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = content_length(&head);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed under a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let close = head.to_ascii_lowercase().contains("connection: close");
    (head.lines().next().unwrap().to_owned(), body, close)
}
