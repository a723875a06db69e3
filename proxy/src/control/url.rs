//! The operator's address, as given to `--operator`.

use std::fmt;
use std::str::FromStr;

use http::Uri;
use http::uri::Authority;
use rustls_pki_types::ServerName;

/// An `https://host[:port]` URL: where the operator serves the config stream. The host
/// (a DNS name or an IP address) is also the name its certificate must carry.
#[derive(Clone, Debug)]
pub struct OperatorUrl {
    authority: Authority,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

/// Why an `--operator` value is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} (expected https://host:port, e.g. https://braid-operator.braid-system.svc:8443)")]
pub struct BadOperatorUrl(String);

impl OperatorUrl {
    /// The host without brackets: a DNS name or an IP address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The name the operator's certificate is checked against.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// The absolute URI of `path` on the operator (HTTP/2 sends scheme and authority as
    /// pseudo-headers, so requests carry the full URI).
    pub fn uri(&self, path: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme("https")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
}

impl fmt::Display for OperatorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority)
    }
}

impl FromStr for OperatorUrl {
    type Err = BadOperatorUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| BadOperatorUrl(why.to_owned());
        let uri: Uri = s.parse().map_err(|e| bad(&format!("not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some(other) => return Err(bad(&format!("the scheme must be https, not {other}"))),
            None => return Err(bad("no scheme")),
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information is not allowed"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("a path or query is not allowed"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let server_name = ServerName::try_from(host.clone()).map_err(|e| {
            bad(&format!(
                "host {host:?} is not a DNS name or IP address: {e}"
            ))
        })?;
        Ok(Self {
            port: authority.port_u16().unwrap_or(443),
            authority,
            host,
            server_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_and_ip_addresses() {
        let u: OperatorUrl = "https://braid-operator.braid-system.svc:8443"
            .parse()
            .unwrap();
        assert_eq!(u.host(), "braid-operator.braid-system.svc");
        assert_eq!(u.port(), 8443);
        assert!(matches!(u.server_name(), ServerName::DnsName(_)));
        assert_eq!(
            u.uri("/v1/config").unwrap().to_string(),
            "https://braid-operator.braid-system.svc:8443/v1/config"
        );

        let u: OperatorUrl = "https://127.0.0.1:9443/".parse().unwrap();
        assert_eq!(u.host(), "127.0.0.1");
        assert!(matches!(u.server_name(), ServerName::IpAddress(_)));

        let u: OperatorUrl = "https://[::1]:9443".parse().unwrap();
        assert_eq!(u.host(), "::1");
        assert_eq!(u.port(), 9443);
        assert!(matches!(u.server_name(), ServerName::IpAddress(_)));
        assert_eq!(u.to_string(), "https://[::1]:9443");

        let u: OperatorUrl = "https://operator".parse().unwrap();
        assert_eq!(u.port(), 443);
    }

    #[test]
    fn refusals_say_why() {
        for (url, why) in [
            ("http://operator:8443", "scheme must be https"),
            ("operator:8443", "scheme"),
            ("https://u:p@operator:8443", "user information"),
            ("https://operator:8443/v1/config", "path"),
            ("https://operator:8443?x=1", "path or query"),
            ("https://", "URL"),
            ("https://a..b:8443", "not a DNS name"),
            ("https://-bad:8443", "not a DNS name"),
        ] {
            let err = url.parse::<OperatorUrl>().unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
