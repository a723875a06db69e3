//! The `Host` rules both HTTP/1.1 engines apply (RFC 9112 §3.2, RFC 9113 §8.3.1): an
//! HTTP/1.1 request carries exactly one valid Host, an absolute-form target replaces it,
//! and over HTTP/2 a `host` header agrees with `:authority`. A request that breaks them
//! is answered 400: routing by a Host the app reads differently is a way around routes.

use http::header::HOST;
use http::{HeaderValue, Request, Version};

/// Why a request's Host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An HTTP/1.1 request without Host.
    #[error("an HTTP/1.1 request needs a Host header")]
    Missing,
    /// More than one Host line.
    #[error("more than one Host header")]
    Duplicate,
    /// Not `host[:port]`.
    #[error("invalid Host header {0:?}: write host[:port]")]
    Invalid(String),
    /// HTTP/2's `host` differs from `:authority`.
    #[error("host header {host:?} differs from :authority {authority:?}")]
    Mismatch {
        /// The `host` header.
        host: String,
        /// The `:authority` pseudo-header.
        authority: String,
    },
}

/// Whether `value` is a Host field value: `uri-host [":" port]` (RFC 9110 §7.2), the host
/// a reg-name (unreserved, pct-encoded and sub-delims characters; an IPv4 address is
/// one) or an IPv6 literal in brackets. Empty is valid: a target without an authority.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => value.split_at(end + 1),
            None => return false,
        },
        _ => match value.iter().position(|&b| b == b':') {
            Some(at) => value.split_at(at),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    port_ok
        && match host {
            [b'[', literal @ .., b']'] => {
                !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            }
            _ => reg_name(host),
        }
}

/// `*( unreserved / pct-encoded / sub-delims )` (RFC 3986 §3.2.2).
fn reg_name(mut s: &[u8]) -> bool {
    while let Some((&b, rest)) = s.split_first() {
        s = match (b, rest) {
            (b'%', [h, l, rest @ ..]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => rest,
            (b'%', _) => return false,
            (b, rest) if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => rest,
            _ => return false,
        };
    }
    true
}

/// Applies the Host rules to a request the full server parsed: refuses what breaks
/// them, and gives an absolute-form HTTP/1.x request the Host of its target.
pub fn check<B>(req: &mut Request<B>) -> Result<(), HostError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    if let Some(host) = &host
        && !valid_host(host.as_bytes())
    {
        return Err(HostError::Invalid(
            String::from_utf8_lossy(host.as_bytes()).into_owned(),
        ));
    }
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    match (req.version(), host, authority) {
        (Version::HTTP_2, Some(host), Some(authority))
            if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) =>
        {
            return Err(HostError::Mismatch {
                host: String::from_utf8_lossy(host.as_bytes()).into_owned(),
                authority,
            });
        }
        (Version::HTTP_2, _, _) => {}
        // Absolute-form: the target's authority is the Host (RFC 9112 §3.2.2).
        (_, _, Some(authority)) => {
            let value = HeaderValue::from_str(&authority)
                .map_err(|_| HostError::Invalid(authority.clone()))?;
            req.headers_mut().insert(HOST, value);
        }
        (Version::HTTP_11, None, None) => return Err(HostError::Missing),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_are_host_and_port() {
        for good in [
            &b"web"[..],
            b"web.shop.svc.cluster.local:8080",
            b"10.0.0.1:80",
            b"[::1]:8080",
            b"[fd00::1]",
            b"a%20b",
            b"",
            b"xn--bcher-kva.example",
        ] {
            assert!(valid_host(good), "{}", good.escape_ascii());
        }
        for bad in [
            &b"web/evil"[..],
            b"user@web",
            b"web:80:90",
            b"web:http",
            b"web host",
            b"[::1",
            b"[]:80",
            b"[::1]x",
            b"a%2",
            b"a%zz",
            b"caf\xc3\xa9",
            b"web\t",
        ] {
            assert!(!valid_host(bad), "{}", bad.escape_ascii());
        }
    }

    fn request(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        assert_eq!(
            check(&mut request(Version::HTTP_11, "/", &[])),
            Err(HostError::Missing)
        );
        assert_eq!(
            check(&mut request(Version::HTTP_11, "/", &["a", "b"])),
            Err(HostError::Duplicate)
        );
        assert!(matches!(
            check(&mut request(Version::HTTP_11, "/", &["a/b"])),
            Err(HostError::Invalid(_))
        ));
        assert_eq!(check(&mut request(Version::HTTP_11, "/", &["a"])), Ok(()));
        // HTTP/1.0 may leave it out.
        assert_eq!(check(&mut request(Version::HTTP_10, "/", &[])), Ok(()));
    }

    #[test]
    fn an_absolute_form_target_replaces_host() {
        let mut req = request(Version::HTTP_11, "http://payments:8080/pay", &["web"]);
        assert_eq!(check(&mut req), Ok(()));
        assert_eq!(req.headers()[HOST], "payments:8080");
        let mut req = request(Version::HTTP_11, "http://payments/pay", &[]);
        assert_eq!(check(&mut req), Ok(()));
        assert_eq!(req.headers()[HOST], "payments");
    }

    #[test]
    fn http_2_host_agrees_with_authority() {
        let mut req = request(Version::HTTP_2, "http://payments/", &["payments"]);
        assert_eq!(check(&mut req), Ok(()));
        let mut req = request(Version::HTTP_2, "http://payments/", &["admin"]);
        assert!(matches!(check(&mut req), Err(HostError::Mismatch { .. })));
        // No host header: :authority alone is fine.
        let mut req = request(Version::HTTP_2, "http://payments/", &[]);
        assert_eq!(check(&mut req), Ok(()));
    }
}
