//! `pingora-peer LISTEN UPSTREAM [h2]`: h2c (and HTTP/1.1) on LISTEN, proxied to UPSTREAM
//! over HTTP/1.1 or, with `h2`, h2c (up to `PINGORA_H2_STREAMS` streams per upstream
//! connection, default 100); one worker thread, as braid-proxy runs in the bench.

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Peer {
    upstream: String,
    h2: bool,
    streams: usize,
}

#[async_trait]
impl ProxyHttp for Peer {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if self.h2 {
            peer.options.set_http_version(2, 2);
            // Its default is one stream per upstream connection; many streams share one,
            // as braid's upstream connection does.
            peer.options.max_h2_streams = self.streams;
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: pingora-peer LISTEN UPSTREAM [h2]");
        std::process::exit(2);
    };
    let h2 = args.get(3).is_some_and(|a| a == "h2");
    let streams = std::env::var("PINGORA_H2_STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let conf = ServerConf {
        threads: 1,
        // Stopped at once at the end of the bench.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let peer = Peer {
        upstream: upstream.clone(),
        h2,
        streams,
    };
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, peer);
    if let Some(app) = service.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
