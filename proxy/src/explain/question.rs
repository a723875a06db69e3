//! The question, read from the query string: what is asked (`to`, `inbound`), of which
//! request (`method`, `path`, `header`), by whom (`identity`, `address`).

use std::net::IpAddr;

use super::ExplainError;

/// A service port as asked: `name[.namespace][:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ServicePortName {
    /// The service's name.
    pub(super) name: String,
    /// Its namespace, when given.
    pub(super) namespace: Option<String>,
    /// The port, when given.
    pub(super) port: Option<u16>,
}

/// One question.
#[derive(Debug)]
pub(super) struct Question {
    /// The service port a request is sent to.
    pub(super) to: Option<ServicePortName>,
    /// The app's port a request comes in on.
    pub(super) inbound: Option<u16>,
    /// The inbound caller's verified identity; `None`: plaintext.
    pub(super) identity: Option<String>,
    /// The inbound caller's address.
    pub(super) address: Option<IpAddr>,
    /// The request's method.
    pub(super) method: http::Method,
    /// Its path, without the query.
    pub(super) path: String,
    /// Its headers.
    pub(super) headers: http::HeaderMap,
    /// Its headers as asked (names in lower case), for the answer.
    pub(super) header_list: Vec<(String, String)>,
}

impl Question {
    /// Reads `query`; errors name the parameter.
    pub(super) fn parse(query: &[(String, String)]) -> Result<Self, ExplainError> {
        let mut to = None;
        let mut inbound = None;
        let mut identity = None;
        let mut address = None;
        let mut method = None;
        let mut path = None;
        let mut headers = http::HeaderMap::new();
        let mut header_list = Vec::new();
        for (key, value) in query {
            match key.as_str() {
                "to" => once(&mut to, "to", value, service_port)?,
                "inbound" => once(&mut inbound, "inbound", value, port)?,
                "identity" => once(&mut identity, "identity", value, caller_identity)?,
                "address" => once(&mut address, "address", value, |v| {
                    v.parse::<IpAddr>().map_err(|_| {
                        ExplainError::param(
                            "address",
                            format!("{v:?} is not an IP address, e.g. address=10.0.0.7"),
                        )
                    })
                })?,
                "method" => once(&mut method, "method", value, |v| {
                    http::Method::from_bytes(v.as_bytes()).map_err(|_| {
                        ExplainError::param(
                            "method",
                            format!("{v:?} is not an HTTP method, e.g. method=POST"),
                        )
                    })
                })?,
                "path" => once(&mut path, "path", value, request_path)?,
                "header" => {
                    let (name, text, value) = header(value)?;
                    header_list.push((name.as_str().to_owned(), text));
                    headers.append(name, value);
                }
                other => return Err(ExplainError::Unknown(other.to_owned())),
            }
        }
        if to.is_none() && inbound.is_none() {
            return Err(ExplainError::NothingAsked);
        }
        if inbound.is_none() {
            for (param, given) in [
                ("identity", identity.is_some()),
                ("address", address.is_some()),
            ] {
                if given {
                    return Err(ExplainError::param(
                        param,
                        "names the caller of the app's port: ask it with inbound=<port>, e.g. inbound=8080",
                    ));
                }
            }
        }
        Ok(Self {
            to,
            inbound,
            identity,
            address,
            method: method.unwrap_or(http::Method::GET),
            path: path.unwrap_or_else(|| "/".to_owned()),
            headers,
            header_list,
        })
    }
}

/// Sets `slot` from `value` read by `read`, refusing a parameter given twice.
fn once<T>(
    slot: &mut Option<T>,
    param: &'static str,
    value: &str,
    read: impl FnOnce(&str) -> Result<T, ExplainError>,
) -> Result<(), ExplainError> {
    if slot.is_some() {
        return Err(ExplainError::param(param, "given twice: give it once"));
    }
    *slot = Some(read(value)?);
    Ok(())
}

/// The identity of an inbound caller, as its certificate would carry it.
fn caller_identity(v: &str) -> Result<String, ExplainError> {
    match v.is_empty() {
        true => Err(ExplainError::param(
            "identity",
            "empty: leave it out for a plaintext caller, or give one, e.g. identity=spiffe://cluster.local/ns/shop/sa/checkout",
        )),
        false => Ok(v.to_owned()),
    }
}

/// `name[.namespace][:port]`; a Kubernetes DNS name (`name.namespace.svc…`) is taken too.
fn service_port(v: &str) -> Result<ServicePortName, ExplainError> {
    let bad = || {
        ExplainError::param(
            "to",
            format!("{v:?} is not <service>[.<namespace>][:<port>], e.g. to=payments.shop:80"),
        )
    };
    let (host, port) = match v.rsplit_once(':') {
        Some((host, p)) => (
            host,
            Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                ExplainError::param(
                    "to",
                    format!("{p:?} is not a port from 1 to 65535, e.g. to={host}:80"),
                )
            })?),
        ),
        None => (v, None),
    };
    let mut labels = host.split('.');
    let name = labels.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
    let namespace = match labels.next() {
        None => None,
        Some("") => return Err(bad()),
        Some(ns) => Some(ns.to_owned()),
    };
    // Anything after the namespace must be the cluster's service domain.
    if let Some(rest) = labels.next()
        && rest != "svc"
    {
        return Err(bad());
    }
    Ok(ServicePortName {
        name: name.to_owned(),
        namespace,
        port,
    })
}

/// A port of the app.
fn port(v: &str) -> Result<u16, ExplainError> {
    v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        ExplainError::param(
            "inbound",
            format!("{v:?} is not a port from 1 to 65535; give the app's port, e.g. inbound=8080"),
        )
    })
}

/// The path rules match on: the request's, without its query.
fn request_path(v: &str) -> Result<String, ExplainError> {
    if !v.starts_with('/') {
        return Err(ExplainError::param(
            "path",
            format!("{v:?} does not start with /, e.g. path=/api/orders"),
        ));
    }
    Ok(v[..v.find(['?', '#']).unwrap_or(v.len())].to_owned())
}

/// `name:value`: the name, and the value as text and as a header value.
fn header(v: &str) -> Result<(http::HeaderName, String, http::HeaderValue), ExplainError> {
    let (name, value) = v.split_once(':').ok_or_else(|| {
        ExplainError::param(
            "header",
            format!("{v:?} is not name:value, e.g. header=x-user:ann"),
        )
    })?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        ExplainError::param(
            "header",
            format!("{name:?} (in {v:?}) is not a header name"),
        )
    })?;
    // As HTTP reads a field: the whitespace around the value is not part of it.
    let text = value.trim_matches([' ', '\t']);
    let value = http::HeaderValue::from_str(text).map_err(|_| {
        ExplainError::param(
            "header",
            format!("{text:?} (the value of {name}) is not a header value"),
        )
    })?;
    Ok((name, text.to_owned(), value))
}
