//! `pingora-peer LISTEN UPSTREAM [h2]`: h2c (and HTTP/1.1) on LISTEN, proxied to UPSTREAM
//! over HTTP/1.1 or, with `h2`, h2c; one worker thread, as braid-proxy runs in the bench.

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Peer {
    upstream: String,
    h2: bool,
}

#[async_trait]
impl ProxyHttp for Peer {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if self.h2 {
            peer.options.set_http_version(2, 2);
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
    let conf = ServerConf {
        threads: 1,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let peer = Peer {
        upstream: upstream.clone(),
        h2,
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
