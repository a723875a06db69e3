//! An admin port braidctl asks: an address it reaches itself (directory mode, or a port
//! forwarded), or a pod's port through the API server's pod proxy subresource
//! (`pods/NAME:PORT/proxy/...`), which needs nothing but the kubeconfig.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::http::{self, HttpError};

/// Where an admin port is.
#[derive(Clone)]
pub enum Admin {
    /// An address braidctl connects to.
    Addr(SocketAddr),
    /// A port on a pod's loopback, forwarded through the API server (`pods/portforward`),
    /// as `kubectl port-forward` does.
    PortForward {
        /// The cluster.
        client: kube::Client,
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The port in the pod.
        port: u16,
    },
    /// A pod's port, through the API server.
    PodProxy {
        /// The cluster.
        client: kube::Client,
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The port on the pod's address.
        port: u16,
    },
}

impl fmt::Display for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(addr) => write!(f, "{addr}"),
            Self::PodProxy {
                namespace,
                pod,
                port,
                ..
            }
            | Self::PortForward {
                namespace,
                pod,
                port,
                ..
            } => write!(f, "pod {namespace}/{pod}:{port}"),
        }
    }
}

impl Admin {
    /// The pod it is on, when braidctl reaches it through the API server.
    pub fn pod(&self) -> Option<&str> {
        match self {
            Self::Addr(_) => None,
            Self::PodProxy { pod, .. } | Self::PortForward { pod, .. } => Some(pod),
        }
    }

    /// `GET path`; the body of a 2xx answer, within `timeout`.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Bytes, HttpError> {
        let target = self.to_string();
        let unreachable = |message: String| HttpError::Unreachable {
            target: target.clone(),
            message,
        };
        let exchange = async {
            match self {
                Self::Addr(addr) => {
                    let tcp = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| unreachable(e.to_string()))?;
                    http::get_over(tcp, &target, &target, path).await
                }
                Self::PortForward {
                    client,
                    namespace,
                    pod,
                    port,
                } => {
                    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                        kube::Api::namespaced(client.clone(), namespace);
                    let mut forwarder = pods
                        .portforward(pod, &[*port])
                        .await
                        .map_err(|e| unreachable(format!("port-forward: {e}")))?;
                    let stream = forwarder.take_stream(*port).ok_or_else(|| {
                        unreachable("port-forward: no stream for the port".into())
                    })?;
                    let body = http::get_over(stream, "localhost", &target, path).await;
                    forwarder.abort();
                    body
                }
                Self::PodProxy {
                    client,
                    namespace,
                    pod,
                    port,
                } => {
                    let uri =
                        format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy{path}");
                    let req = ::http::Request::get(uri)
                        .body(kube::client::Body::empty())
                        .map_err(|e| unreachable(e.to_string()))?;
                    let resp = client
                        .send(req)
                        .await
                        .map_err(|e| unreachable(e.to_string()))?;
                    http::answer(&target, path, resp).await
                }
            }
        };
        http::within(&target, timeout, exchange).await
    }

    /// `GET path`, decoded from JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<T, HttpError> {
        let body = self.get(path, timeout).await?;
        http::decode(self.to_string(), path, &body)
    }
}
