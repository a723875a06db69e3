//! HTTP/1.1 heads as the relay needs them (RFC 9112): where a head ends, how its body is
//! framed, and whether it carries hop-by-hop headers that must not be passed on. Pure:
//! bytes in, facts out, so every rule is unit-tested without sockets.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::HeaderMap;

/// Header lines a head may carry (hyper's default too); more is refused.
pub const MAX_HEADERS: usize = 100;
/// A request head larger than this goes to the full server (whose limit is larger).
pub const MAX_HEAD: usize = 64 * 1024;
/// A response head larger than this is refused (502), as hyper's client would.
pub const MAX_RESPONSE_HEAD: usize = 400 * 1024;

/// A head that cannot be relayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or broken.
    #[error("malformed HTTP/1 head: {0}")]
    Malformed(httparse::Error),
    /// Over [`MAX_RESPONSE_HEAD`] bytes or [`MAX_HEADERS`] lines.
    #[error("head too large (over {MAX_RESPONSE_HEAD} bytes or {MAX_HEADERS} header lines)")]
    TooLarge,
    /// Content-Length is not a number, or two disagree.
    #[error("invalid content-length")]
    ContentLength,
    /// Both Transfer-Encoding and Content-Length: a request-smuggling shape.
    #[error("both transfer-encoding and content-length")]
    Ambiguous,
    /// A 101 the request did not ask for.
    #[error("unexpected 101 switching protocols")]
    UnexpectedSwitch,
    /// No Host, more than one, or one that is not `host[:port]` (RFC 9112 §3.2).
    #[error("{0}")]
    Host(crate::http::host::HostError),
}

/// Why a request is left to the full HTTP server (hyper) instead of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// HTTP/1.0: its keep-alive rules differ.
    Http10,
    /// A chunked (or otherwise transfer-coded) request body.
    TransferCoded,
    /// `Expect: 100-continue`.
    Expect,
    /// A protocol upgrade (WebSocket).
    Upgrade,
    /// `Connection` names further hop-by-hop headers.
    ConnectionTokens,
    /// A body too large to hold for retries.
    LargeBody,
    /// A head over the relay's limit (the full server allows more).
    LargeHead,
    /// `CONNECT`: a tunnel, not a request.
    Connect,
    /// An absolute-form target (`GET http://host/path`): its authority replaces Host,
    /// which the full server does.
    AbsoluteForm,
}

/// A request head the relay can forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// The head's length in bytes, final blank line included.
    pub len: usize,
    /// The method.
    pub method: http::Method,
    /// Where the request target is in the head.
    pub target: Range<usize>,
    /// The body's length (`Content-Length`, else 0).
    pub body: usize,
    /// It carries hop-by-hop headers: the head is rebuilt without them.
    pub rewrite: bool,
    /// `Connection: close`: the connection ends after this exchange.
    pub close: bool,
    /// A kubelet health check (never shed).
    pub probe: bool,
}

impl RequestInfo {
    /// The path of the target (without the query), as routing matches it.
    pub fn path<'a>(&self, head: &'a [u8]) -> std::borrow::Cow<'a, str> {
        let target = head.get(self.target.clone()).unwrap_or_default();
        let target = std::str::from_utf8(target).unwrap_or("/");
        if target.starts_with('/') {
            let end = target.find('?').unwrap_or(target.len());
            return std::borrow::Cow::Borrowed(&target[..end]);
        }
        // absolute-form (`GET http://host/path`) or `*`.
        match target.parse::<http::Uri>() {
            Ok(uri) => std::borrow::Cow::Owned(uri.path().to_owned()),
            Err(_) => std::borrow::Cow::Borrowed(target),
        }
    }
}

/// What a request head turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Not complete yet: read more.
    Partial,
    /// The relay forwards it.
    Relay(RequestInfo),
    /// The full HTTP server serves it (and the rest of the connection).
    Handover(Handover),
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, relayed as it is.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A response head the relay can pass on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseInfo {
    /// The head's length in bytes.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub framing: Framing,
    /// The head is rebuilt: hop-by-hop headers, an HTTP/1.0 status line, or a body that
    /// ends with the connection (so the caller is told `Connection: close`).
    pub rewrite: bool,
    /// The server will not take another request on this connection.
    pub close: bool,
    /// Shed by the endpoint's overload protection (`x-braid-overloaded`).
    pub overloaded: bool,
    /// An interim (1xx) response: the final one follows.
    pub interim: bool,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), besides `Connection` itself and `TE`
/// (`TE: trailers` is kept: gRPC needs it end to end). The same list as the full server's.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
    ]
    .iter()
    .chain(&["proxy-authorization", "trailer", "upgrade", "te"])
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The elements of a list-valued header (RFC 9110 §5.6.1).
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// `value` without the optional whitespace around it: SP and HTAB only (RFC 9110
/// §5.6.3). Not Unicode whitespace: a length or coding with a no-break space (bytes
/// httparse passes as obs-text) is not what a strict server reads either.
fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// A Content-Length value: digits only (no sign, no spaces inside).
fn content_length(value: &[u8], seen: Option<u64>) -> Result<u64, HeadError> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::ContentLength);
    }
    let n = std::str::from_utf8(digits)
        .map_err(|_| HeadError::ContentLength)?
        .parse()
        .map_err(|_| HeadError::ContentLength)?;
    match seen {
        Some(other) if other != n => Err(HeadError::ContentLength),
        _ => Ok(n),
    }
}

/// Room for a head's header lines, left uninitialised: initialising 100 of them for
/// every parse costs more than the parse.
type Headers<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

fn headers<'b>() -> Headers<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Parses the request head at the start of `buf` into `req`.
fn parse_req<'h, 'b>(
    req: &mut httparse::Request<'h, 'b>,
    buf: &'b [u8],
    storage: &'h mut Headers<'b>,
) -> httparse::Result<usize> {
    req.parse_with_uninit_headers(buf, storage)
}

/// Parses the response head at the start of `buf` into `resp`.
fn parse_resp<'h, 'b>(
    resp: &mut httparse::Response<'h, 'b>,
    buf: &'b [u8],
    storage: &'h mut Headers<'b>,
) -> httparse::Result<usize> {
    httparse::ParserConfig::default().parse_response_with_uninit_headers(resp, buf, storage)
}

fn offset(head: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(head.as_ptr() as usize)
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        e => HeadError::Malformed(e),
    }
}

/// Reads the request head at the start of `buf`. Requests whose body is over
/// `max_body` bytes are handed over, as are the shapes the relay leaves to the full
/// server.
pub fn parse_request(buf: &[u8], max_body: usize) -> Result<Request, HeadError> {
    let mut storage = headers();
    let mut req = httparse::Request::new(&mut []);
    let len = match parse_req(&mut req, buf, &mut storage) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Ok(Request::Handover(Handover::LargeHead));
        }
        Ok(httparse::Status::Partial) => return Ok(Request::Partial),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => return Ok(Request::Handover(Handover::LargeHead)),
        Err(e) => return Err(HeadError::Malformed(e)),
    };
    if req.version != Some(1) {
        return Ok(Request::Handover(Handover::Http10));
    }
    if req.method == Some("CONNECT") {
        return Ok(Request::Handover(Handover::Connect));
    }
    let method = http::Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed(httparse::Error::Token))?;
    let path = req.path.unwrap_or("");
    if !path.starts_with('/') && path != "*" {
        return Ok(Request::Handover(Handover::AbsoluteForm));
    }
    let target = offset(buf, path.as_bytes())..offset(buf, path.as_bytes()) + path.len();
    let mut hosts = 0;
    let mut body = None;
    let mut rewrite = false;
    let mut close = false;
    let mut probe = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            body = Some(content_length(h.value, body)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Request::Handover(Handover::TransferCoded));
        } else if name.eq_ignore_ascii_case("expect") {
            return Ok(Request::Handover(Handover::Expect));
        } else if name.eq_ignore_ascii_case("upgrade") {
            return Ok(Request::Handover(Handover::Upgrade));
        } else if name.eq_ignore_ascii_case("connection") {
            rewrite = true;
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    return Ok(Request::Handover(Handover::Upgrade));
                } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                    return Ok(Request::Handover(Handover::ConnectionTokens));
                }
            }
        } else if name.eq_ignore_ascii_case("te") {
            // Kept as it is only when it says exactly what is forwarded.
            rewrite |= !h.value.eq_ignore_ascii_case(b"trailers");
        } else if is_hop_by_hop(name) {
            rewrite = true;
        } else if name.eq_ignore_ascii_case("user-agent") {
            probe = h.value.starts_with(b"kube-probe/");
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !crate::http::host::valid_host(trim_ows(h.value)) {
                let value = String::from_utf8_lossy(h.value).into_owned();
                return Err(HeadError::Host(crate::http::host::HostError::Invalid(
                    value,
                )));
            }
        }
    }
    match hosts {
        0 => return Err(HeadError::Host(crate::http::host::HostError::Missing)),
        1 => {}
        _ => return Err(HeadError::Host(crate::http::host::HostError::Duplicate)),
    }
    let body = usize::try_from(body.unwrap_or(0)).unwrap_or(usize::MAX);
    if body > max_body {
        return Ok(Request::Handover(Handover::LargeBody));
    }
    // httparse takes a bare LF as a line end; a server that does not would read the
    // headers differently (a smuggling shape): such a head goes out rebuilt with CRLFs.
    rewrite |= bare_lf(&buf[..len]);
    Ok(Request::Relay(RequestInfo {
        len,
        method,
        target,
        body,
        rewrite,
        close,
        probe,
    }))
}

/// Whether `head` ends a line with LF alone.
fn bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// The request's headers as a map, for routing rules that match on them; hop-by-hop
/// ones are left out, as they are not forwarded.
pub fn header_map(head: &[u8]) -> HeaderMap {
    let mut storage = headers();
    let mut req = httparse::Request::new(&mut []);
    let mut map = HeaderMap::new();
    if parse_req(&mut req, head, &mut storage).is_err() {
        return map;
    }
    for h in req.headers.iter().filter(|h| !is_hop_by_hop(h.name)) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// Reads the response head at the start of `buf`, for a request with `method`.
/// `Ok(None)`: not complete yet.
pub fn parse_response(
    buf: &[u8],
    method: &http::Method,
) -> Result<Option<ResponseInfo>, HeadError> {
    let mut storage = headers();
    let mut resp = httparse::Response::new(&mut []);
    let len = match parse_resp(&mut resp, buf, &mut storage).map_err(parse_error)? {
        httparse::Status::Partial if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(HeadError::TooLarge);
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let status = resp.code.unwrap_or(0);
    // httparse takes any three digits; `000` or `099` would go out as `0` or `99`.
    if status < 100 {
        return Err(HeadError::Malformed(httparse::Error::Status));
    }
    if status == 101 {
        return Err(HeadError::UnexpectedSwitch);
    }
    let http10 = resp.version == Some(0);
    let mut length = None;
    let mut chunked = None;
    let mut rewrite = http10 || bare_lf(&buf[..len]);
    let mut close = false;
    let mut keep_alive = false;
    let mut overloaded = false;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(content_length(h.value, length)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only when it is the last coding; anything else ends with the
            // connection (RFC 9112 §6.3). The lines are one list: a line with no
            // coding leaves the last one as it was.
            let last = tokens(h.value).last();
            chunked = Some(match last {
                Some(t) => t.eq_ignore_ascii_case(b"chunked"),
                None => chunked.unwrap_or(false),
            });
        } else if name.eq_ignore_ascii_case("connection") {
            rewrite = true;
            for t in tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is_hop_by_hop(name) {
            rewrite = true;
        } else if name.eq_ignore_ascii_case("x-braid-overloaded") {
            overloaded = true;
        }
    }
    // HTTP/1.0 with Transfer-Encoding: its framing is faulty, and the connection closes
    // after it even with keep-alive (RFC 9112 §6.1).
    if http10 && (!keep_alive || chunked.is_some()) {
        close = true;
    }
    let interim = (100..200).contains(&status);
    let framing = if interim || status == 204 || status == 304 || method == http::Method::HEAD {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(_), Some(_)) => return Err(HeadError::Ambiguous),
            (Some(true), None) => Framing::Chunked,
            (Some(false), None) | (None, None) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    if framing == Framing::UntilClose {
        close = true;
        rewrite = true;
    }
    Ok(Some(ResponseInfo {
        len,
        status,
        framing,
        rewrite,
        close,
        overloaded,
        interim,
    }))
}

/// Writes `head` (a request head) to `out` without its hop-by-hop headers.
pub fn rewrite_request(head: &[u8], out: &mut Vec<u8>) {
    let mut storage = headers();
    let mut req = httparse::Request::new(&mut []);
    if parse_req(&mut req, head, &mut storage).is_err() {
        return;
    }
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(req.headers, out, true);
    out.extend_from_slice(b"\r\n");
}

/// Writes `head` (a response head described by `info`) to `out` as HTTP/1.1, without
/// its hop-by-hop headers, saying `Connection: close` when the body ends with the
/// connection or the caller's connection closes after it (`close`).
pub fn rewrite_response(head: &[u8], info: &ResponseInfo, close: bool, out: &mut Vec<u8>) {
    let mut storage = headers();
    let mut resp = httparse::Response::new(&mut []);
    if parse_resp(&mut resp, head, &mut storage).is_err() {
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(info.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // The body is relayed as framed: a chunked one keeps its Transfer-Encoding.
    write_headers(resp.headers, out, false);
    if close || info.framing == Framing::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_headers(headers: &[httparse::Header<'_>], out: &mut Vec<u8>, request: bool) {
    for h in headers {
        let keep = if h.name.eq_ignore_ascii_case("te") {
            // Only `trailers` passes.
            if tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                out.extend_from_slice(b"te: trailers\r\n");
            }
            false
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            !request
        } else {
            !is_hop_by_hop(h.name)
        };
        if keep {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(buf: &[u8]) -> RequestInfo {
        match parse_request(buf, 1024).unwrap() {
            Request::Relay(info) => info,
            other => panic!("not relayed: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_relayed_as_it_is() {
        let buf = b"GET /api/items?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: wrk\r\n\r\nNEXT";
        let info = relay(buf);
        assert_eq!(info.len, buf.len() - 4);
        assert_eq!(info.method, http::Method::GET);
        assert_eq!(info.body, 0);
        assert!(!info.rewrite && !info.close && !info.probe);
        assert_eq!(info.path(buf), "/api/items");
        assert_eq!(&buf[info.target.clone()], b"/api/items?x=1");
    }

    #[test]
    fn partial_heads_wait_and_huge_ones_are_refused() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost:", 0),
            Ok(Request::Partial)
        );
        // Beyond the relay's limit, the full server (with its larger one) decides.
        let mut big = b"GET / HTTP/1.1\r\nx: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert_eq!(
            parse_request(&big, 0),
            Ok(Request::Handover(Handover::LargeHead))
        );
        assert!(matches!(
            parse_request(b"\x16\x03\x01 junk\r\n\r\n", 0),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn bodies_are_framed_by_content_length() {
        let info = relay(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(info.body, 5);
        assert_eq!(
            parse_request(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                4
            ),
            Ok(Request::Handover(Handover::LargeBody))
        );
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad, 64), Err(HeadError::ContentLength));
        }
        // The same value twice is one length.
        assert_eq!(
            relay(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n")
                .body,
            3
        );
    }

    #[test]
    fn shapes_the_relay_leaves_to_the_full_server() {
        let cases = [
            (&b"GET / HTTP/1.0\r\n\r\n"[..], Handover::Http10),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Handover::TransferCoded,
            ),
            (
                b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                Handover::Expect,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                Handover::Upgrade,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: x-secret\r\n\r\n",
                Handover::ConnectionTokens,
            ),
            (
                b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n",
                Handover::Connect,
            ),
        ];
        for (buf, why) in cases {
            assert_eq!(
                parse_request(buf, 64),
                Ok(Request::Handover(why)),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_close_is_noted() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nKeep-Alive: 5\r\nTE: gzip, trailers\r\nProxy-Authorization: x\r\nX-Kept: 1\r\n\r\n";
        let info = relay(buf);
        assert!(info.rewrite && info.close);
        let mut out = Vec::new();
        rewrite_request(&buf[..info.len], &mut out);
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nHost: a\r\nte: trailers\r\nX-Kept: 1\r\n\r\n"
        );
        // `TE: trailers` alone is forwarded untouched.
        assert!(!relay(b"POST / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n").rewrite);
    }

    #[test]
    fn heads_with_bare_line_feeds_go_out_rebuilt_with_crlf() {
        let buf = b"POST / HTTP/1.1\r\nHost: a\r\nX: a\nContent-Length: 2\r\n\r\nok";
        let info = relay(buf);
        assert!(info.rewrite);
        let mut out = Vec::new();
        rewrite_request(&buf[..info.len], &mut out);
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nHost: a\r\nX: a\r\nContent-Length: 2\r\n\r\n"
        );
        let r = response(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", http::Method::GET);
        assert!(r.rewrite);
    }

    #[test]
    fn probes_and_routing_headers() {
        let buf = b"GET /healthz HTTP/1.1\r\nHost: a\r\nUser-Agent: kube-probe/1.28\r\nX-Tenant: a\r\nX-Tenant: b\r\nConnection: keep-alive\r\n\r\n";
        assert!(relay(buf).probe);
        let map = header_map(buf);
        assert_eq!(map.get_all("x-tenant").iter().count(), 2);
        assert!(!map.contains_key("connection"));
        // An absolute-form target's authority replaces Host: the full server does that.
        let abs = b"GET http://svc.ns:80/v1/x?q HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse_request(abs, 0),
            Ok(Request::Handover(Handover::AbsoluteForm))
        );
    }

    fn response(buf: &[u8], method: http::Method) -> ResponseInfo {
        parse_response(buf, &method).unwrap().unwrap()
    }

    // Forwarded unchanged before: a request without Host, with two, or with one that is
    // not host[:port] (RFC 9112 §3.2 says 400 to each).
    #[test]
    fn http_1_1_requests_carry_exactly_one_valid_host() {
        use crate::http::host::HostError;
        for (buf, want) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], HostError::Missing),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                HostError::Duplicate,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
                HostError::Invalid("a/b".into()),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
                HostError::Invalid("u@a".into()),
            ),
        ] {
            assert_eq!(parse_request(buf, 0), Err(HeadError::Host(want)));
        }
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 0),
            Ok(Request::Relay(_))
        ));
    }

    #[test]
    fn response_bodies_end_as_rfc_9112_says() {
        let get = http::Method::GET;
        let r = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            get.clone(),
        );
        assert_eq!(
            (r.status, r.framing, r.rewrite, r.close),
            (200, Framing::Length(10), false, false)
        );
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            get.clone(),
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            get.clone(),
        );
        assert_eq!((r.framing, r.close), (Framing::UntilClose, true));
        let r = response(b"HTTP/1.1 200 OK\r\n\r\n", get.clone());
        assert_eq!(
            (r.framing, r.close, r.rewrite),
            (Framing::UntilClose, true, true)
        );
        let r = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            http::Method::HEAD,
        );
        assert_eq!(r.framing, Framing::Empty);
        for status in [b"204", b"304"] {
            let mut buf = b"HTTP/1.1 ".to_vec();
            buf.extend_from_slice(status);
            buf.extend_from_slice(b" X\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(response(&buf, get.clone()).framing, Framing::Empty);
        }
        let r = response(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            get.clone(),
        );
        assert!(r.interim && r.framing == Framing::Empty);
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                &get
            ),
            Err(HeadError::Ambiguous)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 101 Switching\r\n\r\n", &get),
            Err(HeadError::UnexpectedSwitch)
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n", &get), Ok(None));
    }

    // Found by the property tests (`props`): each read differently from RFC 9112.
    #[test]
    fn only_spaces_and_tabs_surround_a_length_or_a_coding() {
        let get = http::Method::GET;
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xa05\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\xc2\x85\r\n\r\n",
        ] {
            assert_eq!(parse_response(bad, &get), Err(HeadError::ContentLength));
        }
        assert_eq!(
            parse_request(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\xc2\xa0\r\n\r\n",
                64
            ),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            relay(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t5 \r\n\r\n").body,
            5
        );
        // `chunked` and a no-break space is another coding: the body ends with the
        // connection.
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\xc2\xa0\r\n\r\n",
            get.clone(),
        );
        assert_eq!(r.framing, Framing::UntilClose);
        // A byte that is not UTF-8 does not hide the codings after it.
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \xff, chunked\r\n\r\n",
            get,
        );
        assert_eq!(r.framing, Framing::Chunked);
    }

    #[test]
    fn transfer_encoding_lines_are_one_list() {
        let get = http::Method::GET;
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n",
            get.clone(),
        );
        assert_eq!(r.framing, Framing::Chunked);
        let r = response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            get,
        );
        assert_eq!(r.framing, Framing::UntilClose);
    }

    #[test]
    fn http_1_0_with_transfer_encoding_closes_even_with_keep_alive() {
        let buf =
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = response(buf, http::Method::GET);
        assert_eq!((r.framing, r.close), (Framing::Chunked, true));
        // Without Transfer-Encoding, keep-alive keeps it.
        let buf = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n";
        assert!(!response(buf, http::Method::GET).close);
    }

    #[test]
    fn status_codes_below_100_are_refused() {
        // httparse takes any three digits; rewritten, `000` would go out as `0`.
        for bad in [&b"HTTP/1.1 000 x\r\n\r\n"[..], b"HTTP/1.1 099 x\r\n\r\n"] {
            assert!(matches!(
                parse_response(bad, &http::Method::GET),
                Err(HeadError::Malformed(_))
            ));
        }
    }

    #[test]
    fn response_heads_are_rewritten_for_the_caller() {
        let get = http::Method::GET;
        let buf = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-Braid-Overloaded: 1\r\n\r\n";
        let r = response(buf, get.clone());
        assert!(r.rewrite && !r.close && r.overloaded);
        let mut out = Vec::new();
        rewrite_response(&buf[..r.len], &r, false, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Braid-Overloaded: 1\r\n\r\n"
        );
        let buf = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let r = response(buf, get);
        assert!(r.close, "HTTP/1.0 without keep-alive closes");
        let buf = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
        let r = response(buf, http::Method::GET);
        out.clear();
        rewrite_response(&buf[..r.len], &r, false, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: x\r\nconnection: close\r\n\r\n"
        );
    }
}
