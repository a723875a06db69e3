//! `braid-e2e-app`: the applications inside e2e pods — an HTTP server (HTTP/1.1 and
//! HTTP/2), a server-speaks-first TCP server, an OTLP trace receiver, and clients for
//! them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Apps for braid's end-to-end tests.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP server: `/` answers `<name>`, `/stream` streams with a `grpc-status` trailer,
    /// `/slow` answers after 2 s, `/count` the number of other requests served so far.
    HttpServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        name: String,
        /// Answer every N-th request 500 (a flaky endpoint).
        #[arg(long)]
        fail_every: Option<u64>,
        /// Hold every answer this long (a slow endpoint).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Server-speaks-first TCP: sends `<banner>\n`, then upper-cases one line back.
    BannerServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        banner: String,
    },
    /// Reads the banner, sends `ping`, prints both.
    BannerClient { addr: String },
    /// One request; prints `<status> <body>`, then a gRPC answer's status headers as
    /// `header <k>: <v>` and any trailers as `trailer <k>: <v>`.
    Get {
        addr: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value = "svc")]
        host: String,
        #[arg(long)]
        h2: bool,
        #[arg(long, default_value = "GET")]
        method: String,
        /// `name: value`, repeatable.
        #[arg(long)]
        header: Vec<String>,
    },
    /// Two requests on one kept-alive HTTP/1.1 connection, the second once `wait_file`
    /// exists; prints `1 <status>` and `2 <status>`.
    Twice {
        addr: String,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long)]
        wait_file: std::path::PathBuf,
    },
    /// Sends `count` requests, one connection each, with `--header 'name: value'`s;
    /// prints `<n> <status> <body>` for each distinct answer, most frequent first.
    Tally {
        addr: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long)]
        header: Vec<String>,
    },
    /// A CPU-bound HTTP server: every request burns `work_us` of CPU on its one thread,
    /// so it serves at most 1e6 / `work_us` requests a second.
    CpuServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        work_us: u64,
    },
    /// Open-loop load: `rate` GETs a second for `secs` seconds whatever the answers,
    /// each given up after `timeout_ms`. Prints one line of `key=value`: requests sent
    /// after the first `warmup_secs`, then of those `ok` (200 in time), `shed` (503 with
    /// x-braid-overloaded), `timeout`, `other`, and the p50/p99 of the `ok` ones.
    OpenLoad {
        addr: String,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        secs: u64,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 3)]
        warmup_secs: u64,
    },
    /// Full mTLS handshakes (no resumption) against a braid proxy's Strict port for
    /// `secs`, `concurrency` at a time, as the caller `--cert`/`--key` expecting the
    /// proxy to present `--identity`; prints the rate and handshake times.
    Handshakes {
        addr: std::net::SocketAddr,
        #[arg(long)]
        cert: std::path::PathBuf,
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long)]
        identity: String,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// HTTP/2 load as a gRPC client makes it: `streams` request loops over one
    /// connection until `stop_file` exists (every `slow_every`-th to `/slow`), a new
    /// connection after GOAWAY, unprocessed requests sent again; prints `ok= failed=
    /// retried= opened=`.
    H2Load {
        addr: String,
        #[arg(long, default_value_t = 8)]
        streams: usize,
        #[arg(long, default_value_t = 0)]
        slow_every: u64,
        #[arg(long)]
        stop_file: std::path::PathBuf,
    },
    /// Keep-alive HTTP/1.1 load: `conns` connections, each sending requests one after
    /// another on its socket until `stop_file` exists (every `slow_every`-th to `/slow`);
    /// prints `ok= failed= opened= told_close=`.
    KeepAliveLoad {
        addr: String,
        #[arg(long, default_value_t = 4)]
        conns: usize,
        #[arg(long, default_value_t = 0)]
        slow_every: u64,
        /// POST a small body instead of GET (no one may retry it).
        #[arg(long)]
        post: bool,
        #[arg(long)]
        stop_file: std::path::PathBuf,
    },
    /// Sends requests in a loop until `stop_file` exists; prints `ok=<n> failed=<m>`.
    Load {
        addr: String,
        #[arg(long)]
        stop_file: std::path::PathBuf,
    },
    /// HTTPS (HTTP/1.1) with a fresh self-signed certificate: `/healthz` answers 200,
    /// `/fail` 500, anything else 404.
    HttpsServer {
        #[arg(long)]
        port: u16,
    },
    /// gRPC health server (h2c): `grpc.health.v1.Health/Check` of `--service` (and of
    /// the empty service) answers `--status`; another service gets NOT_FOUND.
    GrpcHealthServer {
        #[arg(long)]
        port: u16,
        /// SERVING or NOT_SERVING.
        #[arg(long)]
        status: String,
        #[arg(long, default_value = "")]
        service: String,
    },
    /// OTLP/HTTP trace receiver (HTTP/1.1): `POST /v1/traces` with an
    /// `application/x-protobuf` `ExportTraceServiceRequest` appends one JSON line per
    /// span to `--out` (see `braid_e2e::otlp`) and answers an empty
    /// `ExportTraceServiceResponse`. Prints `listening` once bound.
    OtlpReceiver {
        #[arg(long, default_value_t = 4318)]
        port: u16,
        #[arg(long)]
        out: std::path::PathBuf,
        /// Answer every export 503 (a broken collector), recording nothing.
        #[arg(long)]
        fail: bool,
    },
    /// Performs every probe of the app containers of `--pod` (Pod JSON) against
    /// `--ip` as kubelet would; prints `<container>/<kind> success|failure <why>` each.
    Probe {
        #[arg(long)]
        ip: std::net::IpAddr,
        #[arg(long)]
        pod: String,
    },
}

struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::HttpServer {
            port,
            name,
            fail_every,
            delay_ms,
        } => {
            let behaviour = Behaviour {
                fail_every,
                delay: Duration::from_millis(delay_ms),
                served: Default::default(),
            };
            http_server(port, name, std::sync::Arc::new(behaviour)).await
        }
        Cmd::BannerServer { port, banner } => banner_server(port, banner).await,
        Cmd::CpuServer { port, work_us } => cpu_server(port, Duration::from_micros(work_us)).await,
        Cmd::OpenLoad {
            addr,
            rate,
            secs,
            timeout_ms,
            warmup_secs,
        } => {
            let addr = resolve(&addr).await?;
            let run = OpenLoadRun {
                rate,
                secs,
                timeout: Duration::from_millis(timeout_ms),
                warmup: Duration::from_secs(warmup_secs),
            };
            println!("{}", run.drive(addr).await?);
            Ok(())
        }
        Cmd::BannerClient { addr } => {
            let stream = TcpStream::connect(resolve(&addr).await?)
                .await
                .context("connect")?;
            let mut reader = BufReader::new(stream);
            let mut banner = String::new();
            reader.read_line(&mut banner).await?;
            reader.get_mut().write_all(b"ping\n").await?;
            let mut reply = String::new();
            reader.read_to_string(&mut reply).await?;
            println!("{}|{}", banner.trim(), reply.trim());
            Ok(())
        }
        Cmd::Get {
            addr,
            path,
            host,
            h2,
            method,
            header,
        } => {
            let addr = resolve(&addr).await?;
            let headers = header_pairs(&header)?;
            let method = http::Method::from_bytes(method.as_bytes()).context("--method")?;
            let resp = request_with(addr, &host, method, &path, h2, &headers).await?;
            let status = resp.status().as_u16();
            let grpc: Vec<(String, String)> = ["grpc-status", "grpc-message"]
                .iter()
                .filter_map(|k| {
                    let v = resp.headers().get(*k)?.to_str().ok()?;
                    Some(((*k).to_owned(), v.to_owned()))
                })
                .collect();
            let collected = resp.into_body().collect().await?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            println!(
                "{status} {}",
                String::from_utf8_lossy(&collected.to_bytes())
            );
            for (k, v) in grpc {
                println!("header {k}: {v}");
            }
            for (k, v) in &trailers {
                println!("trailer {k}: {}", v.to_str().unwrap_or_default());
            }
            Ok(())
        }
        Cmd::Twice {
            addr,
            path,
            wait_file,
        } => {
            let addr = resolve(&addr).await?;
            let stream = TcpStream::connect(addr).await.context("connect")?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            for n in 1..=2 {
                if n == 2 {
                    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
                    while !wait_file.exists() {
                        anyhow::ensure!(
                            tokio::time::Instant::now() < give_up,
                            "{} never appeared",
                            wait_file.display()
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                sender
                    .ready()
                    .await
                    .context("the kept-alive connection closed")?;
                let req = Request::get(path.as_str())
                    .header("host", "svc")
                    .body(Full::new(Bytes::new()))?;
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                println!("{n} {status}");
            }
            Ok(())
        }
        Cmd::Tally {
            addr,
            count,
            path,
            header,
        } => {
            let addr = resolve(&addr).await?;
            let headers = header_pairs(&header)?;
            let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
            for _ in 0..count {
                let answer = match request_with(
                    addr,
                    "svc",
                    http::Method::GET,
                    &path,
                    false,
                    &headers,
                )
                .await
                {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body = resp.into_body().collect().await?.to_bytes();
                        format!("{status} {}", String::from_utf8_lossy(&body).trim())
                    }
                    Err(e) => format!("error {e}"),
                };
                *seen.entry(answer).or_default() += 1;
            }
            let mut tally: Vec<_> = seen.into_iter().collect();
            tally.sort_by_key(|t| std::cmp::Reverse(t.1));
            for (answer, n) in tally {
                println!("{n} {answer}");
            }
            Ok(())
        }
        Cmd::Handshakes {
            addr,
            cert,
            key,
            ca,
            identity,
            secs,
            concurrency,
        } => {
            let run = braid_e2e::handshakes::Handshakes {
                addr,
                cert: &cert,
                key: &key,
                ca: &ca,
                identity: &identity,
            };
            println!("{}", run.run(secs, concurrency).await?);
            Ok(())
        }
        Cmd::HttpsServer { port } => https_server(port).await,
        Cmd::GrpcHealthServer {
            port,
            status,
            service,
        } => {
            let status = match status.as_str() {
                "SERVING" => braid_e2e::grpc_health::SERVING,
                "NOT_SERVING" => braid_e2e::grpc_health::NOT_SERVING,
                other => anyhow::bail!("--status {other}: SERVING or NOT_SERVING"),
            };
            grpc_health_server(port, status, service).await
        }
        Cmd::OtlpReceiver { port, out, fail } => otlp_receiver(port, &out, fail).await,
        Cmd::Probe { ip, pod } => {
            let pod = serde_json::from_str(&pod).context("--pod")?;
            for (probe, verdict) in braid_e2e::prober::probe_pod(&pod, ip).await {
                println!("{probe} {verdict}");
            }
            Ok(())
        }
        Cmd::H2Load {
            addr,
            streams,
            slow_every,
            stop_file,
        } => {
            let host = addr.split(':').next().unwrap_or("svc").to_owned();
            let addr = resolve(&addr).await?;
            let summary =
                braid_e2e::h2load::run(addr, &host, streams, slow_every, &stop_file).await;
            println!("{summary}");
            Ok(())
        }
        Cmd::KeepAliveLoad {
            addr,
            conns,
            slow_every,
            post,
            stop_file,
        } => {
            let plan = braid_e2e::keepalive::Plan {
                host: addr.split(':').next().unwrap_or("svc").to_owned(),
                addr: resolve(&addr).await?,
                conns,
                slow_every,
                post,
            };
            println!("{}", braid_e2e::keepalive::run(plan, &stop_file).await);
            Ok(())
        }
        Cmd::Load { addr, stop_file } => {
            let addr = resolve(&addr).await?;
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop_file.exists() {
                let good = match request_with(addr, "svc", http::Method::GET, "/", false, &[]).await
                {
                    Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
                    Err(_) => false,
                };
                if good {
                    ok += 1;
                } else {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            println!("ok={ok} failed={failed}");
            Ok(())
        }
    }
}

/// `host:port` through the resolver (so `/etc/netns/<pod>/hosts` applies).
async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} has no address"))
}

/// `name: value` pairs from `--header` arguments.
fn header_pairs(header: &[String]) -> anyhow::Result<Vec<(&str, &str)>> {
    header
        .iter()
        .map(|h| h.split_once(':').map(|(k, v)| (k.trim(), v.trim())))
        .collect::<Option<_>>()
        .context("--header takes 'name: value'")
}

async fn request_with(
    addr: SocketAddr,
    host: &str,
    method: http::Method,
    path: &str,
    h2: bool,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    let io = TokioIo::new(stream);
    let body = Full::new(Bytes::new());
    if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{host}{path}"))
            .header("te", "trailers");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body)?;
        Ok(sender.send_request(req).await?)
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body)?;
        Ok(sender.send_request(req).await?)
    }
}

/// How the HTTP server misbehaves, and what it has served.
struct Behaviour {
    fail_every: Option<u64>,
    delay: Duration,
    served: std::sync::atomic::AtomicU64,
}

async fn http_server(
    port: u16,
    name: String,
    behaviour: std::sync::Arc<Behaviour>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let name = name.clone();
        let behaviour = behaviour.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let name = name.clone();
                let behaviour = behaviour.clone();
                async move {
                    use std::sync::atomic::Ordering;
                    if req.uri().path() == "/count" {
                        let n = behaviour.served.load(Ordering::SeqCst);
                        return Ok(Response::new(Full::new(Bytes::from(n.to_string())).boxed()));
                    }
                    let n = behaviour.served.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(behaviour.delay).await;
                    if behaviour
                        .fail_every
                        .is_some_and(|every| n.is_multiple_of(every))
                    {
                        let mut resp =
                            Response::new(Full::new(Bytes::from(format!("{name} failed"))).boxed());
                        *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        return Ok(resp);
                    }
                    let body: http_body_util::combinators::BoxBody<
                        Bytes,
                        std::convert::Infallible,
                    > = match req.uri().path() {
                        "/stream" => {
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            Frames(
                                [
                                    Frame::data(Bytes::from("a,")),
                                    Frame::data(Bytes::from("b")),
                                    Frame::trailers(trailers),
                                ]
                                .into(),
                            )
                            .boxed()
                        }
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            Full::new(Bytes::from(format!("{name} slow"))).boxed()
                        }
                        _ => Full::new(Bytes::from(name)).boxed(),
                    };
                    Ok::<_, std::convert::Infallible>(Response::new(body))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn https_server(port: u16) -> anyhow::Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec!["app.example".to_owned()])?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let svc = service_fn(|req: Request<Incoming>| async move {
                let status = match req.uri().path() {
                    "/healthz" => http::StatusCode::OK,
                    "/fail" => http::StatusCode::INTERNAL_SERVER_ERROR,
                    _ => http::StatusCode::NOT_FOUND,
                };
                let mut resp = Response::new(Full::new(Bytes::from(status.to_string())));
                *resp.status_mut() = status;
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

async fn grpc_health_server(port: u16, status: u64, service: String) -> anyhow::Result<()> {
    use braid_e2e::grpc_health;
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let service = service.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let service = service.clone();
                async move {
                    let path_ok = req.uri().path() == grpc_health::CHECK_PATH;
                    let body = req.into_body().collect().await?.to_bytes();
                    let asked = grpc_health::decode_request(&body);
                    let mut trailers = HeaderMap::new();
                    let mut frames = VecDeque::new();
                    let code = match asked {
                        _ if !path_ok => "12", // UNIMPLEMENTED
                        None => "13",          // INTERNAL: a malformed request
                        Some(s) if s.is_empty() || s == service => {
                            frames.push_back(Frame::data(grpc_health::response(status)));
                            "0"
                        }
                        Some(_) => "5", // NOT_FOUND: an unknown service
                    };
                    trailers.insert("grpc-status", http::HeaderValue::from_static(code));
                    frames.push_back(Frame::trailers(trailers));
                    let mut resp = Response::new(Frames(frames));
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    Ok::<_, hyper::Error>(resp)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn otlp_receiver(port: u16, out: &std::path::Path, fail: bool) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    let file = std::sync::Arc::new(std::sync::Mutex::new(file));
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    println!("listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let file = file.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let file = file.clone();
                async move {
                    let (status, body) = otlp_export(req, &file, fail).await;
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    if status == http::StatusCode::OK {
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(braid_e2e::otlp::PROTOBUF),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One OTLP export: its status and body (a protobuf response, or why not).
async fn otlp_export(
    req: Request<Incoming>,
    file: &std::sync::Mutex<std::fs::File>,
    fail: bool,
) -> (http::StatusCode, Vec<u8>) {
    use braid_e2e::otlp;
    use http::StatusCode;
    use std::io::Write as _;
    let path_ok = req.uri().path() == otlp::TRACES_PATH;
    let post = req.method() == http::Method::POST;
    let protobuf = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(otlp::PROTOBUF));
    // Read the whole body whatever the answer, so the connection stays reusable.
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("body: {e}").into_bytes()),
    };
    if fail {
        println!("refused export (--fail)");
        return (StatusCode::SERVICE_UNAVAILABLE, b"--fail".to_vec());
    }
    if !path_ok {
        return (StatusCode::NOT_FOUND, b"not found".to_vec());
    }
    if !post {
        return (StatusCode::METHOD_NOT_ALLOWED, b"POST only".to_vec());
    }
    if !protobuf {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content-type must be {}", otlp::PROTOBUF).into_bytes(),
        );
    }
    let spans = match otlp::decode_spans(&body) {
        Ok(spans) => spans,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("decode: {e}").into_bytes()),
    };
    let mut lines = String::new();
    for span in &spans {
        lines.push_str(&span.to_string());
        lines.push('\n');
    }
    let written = {
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(lines.as_bytes()).and_then(|()| file.flush())
    };
    if let Err(e) = written {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing spans: {e}").into_bytes(),
        );
    }
    println!("exported {} spans", spans.len());
    (StatusCode::OK, otlp::success_response())
}

async fn banner_server(port: u16, banner: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let banner = banner.clone();
        tokio::spawn(async move {
            let _ = stream.write_all(format!("{banner}\n").as_bytes()).await;
            let mut buf = vec![0u8; 256];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let _ = stream
                .write_all(String::from_utf8_lossy(&buf[..n]).to_uppercase().as_bytes())
                .await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn cpu_server(port: u16, work: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<Incoming>| async move {
                // Busy, not asleep: the thread can serve nothing else meanwhile.
                let start = std::time::Instant::now();
                let mut spins = 0u64;
                while start.elapsed() < work {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("done"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One open-loop run.
struct OpenLoadRun {
    rate: f64,
    secs: u64,
    timeout: Duration,
    warmup: Duration,
}

/// How one request ended.
enum Outcome {
    Ok(Duration),
    Shed,
    Timeout,
    Other,
}

impl OpenLoadRun {
    async fn drive(&self, addr: SocketAddr) -> anyhow::Result<String> {
        use hyper_util::client::legacy::Client;
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build_http();
        let uri: http::Uri = format!("http://{addr}/").parse()?;
        let started = tokio::time::Instant::now();
        let end = started + Duration::from_secs(self.secs);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let at = tick.tick().await;
            if at >= end {
                break;
            }
            let counted = at >= started + self.warmup;
            let (client, uri, timeout) = (client.clone(), uri.clone(), self.timeout);
            tasks.spawn(async move {
                let sent = tokio::time::Instant::now();
                let req = Request::get(uri).body(Full::new(Bytes::new()));
                let outcome = match req {
                    Err(_) => Outcome::Other,
                    Ok(req) => match tokio::time::timeout(timeout, async {
                        let resp = client.request(req).await?;
                        let status = resp.status();
                        let shed = resp.headers().contains_key("x-braid-overloaded");
                        resp.into_body().collect().await?;
                        anyhow::Ok((status, shed))
                    })
                    .await
                    {
                        Err(_) => Outcome::Timeout,
                        Ok(Ok((s, _))) if s == http::StatusCode::OK => Outcome::Ok(sent.elapsed()),
                        Ok(Ok((_, true))) => Outcome::Shed,
                        Ok(_) => Outcome::Other,
                    },
                };
                counted.then_some(outcome)
            });
        }
        let (mut ok, mut shed, mut timeout, mut other) = (Vec::new(), 0u64, 0u64, 0u64);
        while let Some(done) = tasks.join_next().await {
            match done.ok().flatten() {
                Some(Outcome::Ok(t)) => ok.push(t),
                Some(Outcome::Shed) => shed += 1,
                Some(Outcome::Timeout) => timeout += 1,
                Some(Outcome::Other) => other += 1,
                None => {}
            }
        }
        ok.sort();
        let pct = |p: f64| {
            ok.get(((ok.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let counted_secs = self.secs as f64 - self.warmup.as_secs_f64();
        let sent = ok.len() as u64 + shed + timeout + other;
        Ok(format!(
            "secs={counted_secs:.0} sent={sent} ok={} shed={shed} timeout={timeout} other={other} p50_ms={:.1} p99_ms={:.1}",
            ok.len(),
            pct(0.50),
            pct(0.99)
        ))
    }
}
