//! Where a connection's requests go, looked up again for every request so that a config
//! change reaches connections that are already open (keep-alive, HTTP/2).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::tables::{OutboundTarget, Tables};

/// How to find the target of a request.
#[derive(Clone, Debug)]
pub enum Route {
    /// An outbound connection the app made to a service VIP:port.
    Outbound(SocketAddr),
    /// A connection on the explicit listener of this name.
    Listener(Arc<str>),
    /// A fixed target (inbound: the app on loopback).
    Fixed(Arc<OutboundTarget>),
}

impl Route {
    /// The target in `tables`; `None` when the config no longer has it.
    pub fn resolve(&self, tables: &Tables) -> Option<Arc<OutboundTarget>> {
        match self {
            Self::Outbound(dst) => tables.outbound(*dst).cloned(),
            Self::Listener(name) => tables
                .listeners
                .iter()
                .find(|l| *l.name == **name)
                .map(|l| l.target.clone()),
            Self::Fixed(target) => Some(target.clone()),
        }
    }

    /// What the route names, for errors and metrics when it no longer resolves.
    pub fn describe(&self) -> String {
        match self {
            Self::Outbound(dst) => dst.to_string(),
            Self::Listener(name) => format!("listener {name}"),
            Self::Fixed(t) => t.label.to_string(),
        }
    }
}
