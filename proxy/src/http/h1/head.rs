//! HTTP/1.1 heads as the relay needs them (RFC 9112): where a head ends, how its body is
//! framed, what the connection does after it, and how it goes on to the next hop
//! without its hop-by-hop headers. Pure: bytes in, facts out, so every rule is
//! unit-tested (and property-tested against a reference reader) without sockets.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::HeaderMap;

use crate::http::headers::is_hop_by_hop;
use crate::http::host::{HostError, valid_host};

/// Header lines a head may carry (hyper's default too); more is refused.
pub const MAX_HEADERS: usize = 100;
/// A response head larger than this is refused (502), as hyper's client would.
pub const MAX_RESPONSE_HEAD: usize = 400 * 1024;

/// A head that cannot be relayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or broken.
    #[error("malformed HTTP/1 head: {0}")]
    Malformed(httparse::Error),
    /// Over its size limit (a request's is `--max-header-bytes`, a response's
    /// [`MAX_RESPONSE_HEAD`]) or [`MAX_HEADERS`] lines.
    #[error("head too large (over its size limit or {MAX_HEADERS} header lines)")]
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
    Host(HostError),
    /// A request body coded other than chunked alone (RFC 9112 §6.1: 501): the relay
    /// would pass a gzip body on as if it were plain.
    #[error(
        "transfer-encoding {0} is not supported: send the body chunked, or with a content-length"
    )]
    UnsupportedCoding(String),
    /// Transfer-Encoding in an HTTP/1.0 message: its framing is faulty (RFC 9112 §6.1).
    #[error("transfer-encoding in an HTTP/1.0 request: send HTTP/1.1, or a content-length")]
    Http10Coding,
    /// An expectation other than `100-continue` (RFC 9110 §10.1.1: 417).
    #[error("expectation {0:?} is not supported: only 100-continue is")]
    Expectation(String),
    /// A chunked response to an HTTP/1.0 request, which its caller cannot read.
    #[error("chunked response to an HTTP/1.0 request")]
    ChunkedToHttp10,
}

/// How a request's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// Chunked, passed on as it is, trailers included.
    Chunked,
}

/// A request that turns its connection into a tunnel when the upstream agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// `Connection: upgrade` with `Upgrade` (WebSocket): a 101 switches.
    Upgrade,
    /// `CONNECT host:port`: a 2xx opens the tunnel.
    Connect,
}

/// A request head the relay forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    /// The head's length in bytes, final blank line included.
    pub len: usize,
    /// The method.
    pub method: http::Method,
    /// Where the request target is in the head.
    pub target: Range<usize>,
    /// How its body ends.
    pub body: Body,
    /// The head goes on rebuilt (hop-by-hop headers, `Expect`, an absolute-form target,
    /// bare LFs): see [`write_request`].
    pub rewrite: bool,
    /// The caller's connection ends after this exchange: `Connection: close`, or HTTP/1.0
    /// without `keep-alive`.
    pub close: bool,
    /// A kubelet health check (never shed).
    pub probe: bool,
    /// An HTTP/1.0 request: it goes on as HTTP/1.0, so no chunked response comes back.
    pub http10: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the proxy answers `100 Continue` itself when it
    /// is ready for the body, as nginx and Envoy do, and the expectation goes no further.
    pub expect_continue: bool,
    /// The request asks to turn the connection into a tunnel.
    pub tunnel: Option<Tunnel>,
    /// An absolute-form target's authority, which replaces Host (RFC 9112 §3.2.2).
    pub authority: Option<Range<usize>>,
    /// Where the `Upgrade` header's value is in the head (the protocol an upgrade asks
    /// for, which an AccessPolicy judges: the header itself is hop-by-hop, so no header
    /// map built from the head has it).
    pub upgrade: Option<Range<usize>>,
}

impl RequestInfo {
    /// The protocol a [`Tunnel::Upgrade`] asks for (`websocket`, `h2c`), as sent.
    pub fn upgrade_protocol<'a>(&self, head: &'a [u8]) -> Option<&'a str> {
        let value = head.get(self.upgrade.clone()?)?;
        std::str::from_utf8(trim_ows(value)).ok()
    }

    /// The path of the target (without the query), as routing matches it.
    pub fn path<'a>(&self, head: &'a [u8]) -> std::borrow::Cow<'a, str> {
        let target = head.get(self.target.clone()).unwrap_or_default();
        let target = std::str::from_utf8(target).unwrap_or("/");
        if target.starts_with('/') {
            let end = target.find('?').unwrap_or(target.len());
            return std::borrow::Cow::Borrowed(&target[..end]);
        }
        // absolute-form (`GET http://host/path`), authority-form (CONNECT) or `*`.
        match target.parse::<http::Uri>() {
            Ok(uri) if uri.scheme().is_some() => std::borrow::Cow::Owned(uri.path().to_owned()),
            _ => std::borrow::Cow::Borrowed(target),
        }
    }

    /// The target as it goes upstream: origin-form for an absolute-form target.
    fn forwarded_target<'a>(&self, head: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let target = head.get(self.target.clone()).unwrap_or_default();
        let Some(authority) = &self.authority else {
            return target.into();
        };
        match head.get(authority.end..self.target.end).unwrap_or_default() {
            rest @ [b'/', ..] => rest.into(),
            // `http://a?q` asks for `/?q`; a fragment is not sent.
            rest @ [b'?', ..] => [b"/", rest].concat().into(),
            _ => b"/"[..].into(),
        }
    }

    /// Where the request (head and body) ends, for a body framed by length; `None` for a
    /// chunked one, whose end is found as it passes.
    pub fn end(&self) -> Option<usize> {
        match self.body {
            Body::Length(n) => usize::try_from(n).ok()?.checked_add(self.len),
            Body::Chunked => None,
        }
    }

    /// Whether the whole request is within the `buffered` bytes read (never known for a
    /// chunked body: `false`).
    pub fn within(&self, buffered: usize) -> bool {
        self.end().is_some_and(|end| end <= buffered)
    }
}

/// What a request head turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Not complete yet: read more.
    Partial,
    /// A complete head the relay forwards.
    Complete(RequestInfo),
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
    /// The connection became a tunnel (101 to an upgrade, 2xx to CONNECT).
    Tunnel,
}

/// What the response answers: the request as far as its framing depends on it.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    /// The request's method (a HEAD's response has no body).
    pub method: &'a http::Method,
    /// The request went as HTTP/1.0.
    pub http10: bool,
    /// The request asked for a tunnel.
    pub tunnel: Option<Tunnel>,
}

impl<'a> Asked<'a> {
    /// A plain HTTP/1.1 request with `method`.
    pub fn plain(method: &'a http::Method) -> Self {
        Self {
            method,
            http10: false,
            tunnel: None,
        }
    }

    /// What `info` asked.
    pub fn of(info: &'a RequestInfo) -> Self {
        Self {
            method: &info.method,
            http10: info.http10,
            tunnel: info.tunnel,
        }
    }
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

fn range(head: &[u8], part: &[u8]) -> Range<usize> {
    let at = offset(head, part);
    at..at + part.len()
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        e => HeadError::Malformed(e),
    }
}

/// Reads the request head at the start of `buf`: how its body is framed, what the
/// connection does after it, and whether it goes on rebuilt. Whatever RFC 9112 says a
/// server refuses is an error (the caller answers it with [`HeadError`]'s status), as is
/// a head over `max_head` bytes, complete or not ([`HeadError::TooLarge`]).
pub fn parse_request(buf: &[u8], max_head: usize) -> Result<Request, HeadError> {
    let mut storage = headers();
    let mut req = httparse::Request::new(&mut []);
    let len = match parse_req(&mut req, buf, &mut storage).map_err(parse_error)? {
        httparse::Status::Partial if buf.len() > max_head => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(Request::Partial),
        httparse::Status::Complete(len) if len > max_head => return Err(HeadError::TooLarge),
        httparse::Status::Complete(len) => len,
    };
    let http10 = req.version != Some(1);
    let method = http::Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HeadError::Malformed(httparse::Error::Token))?;
    let path = req.path.unwrap_or("");
    let target = range(buf, path.as_bytes());
    let connect = method == http::Method::CONNECT;
    // An absolute-form target's authority is the Host (RFC 9112 §3.2.2).
    let authority = match path.as_bytes() {
        [b'/', ..] | b"*" => None,
        _ if connect => None,
        bytes => {
            let at = find(bytes, b"://")
                .filter(|&at| {
                    at > 0
                        && bytes[..at]
                            .iter()
                            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
                })
                .ok_or(HeadError::Malformed(httparse::Error::Token))?
                + 3;
            let len = bytes[at..]
                .iter()
                .position(|b| b"/?#".contains(b))
                .unwrap_or(bytes.len() - at);
            if !valid_host(&bytes[at..at + len]) {
                let value = String::from_utf8_lossy(&bytes[at..at + len]).into_owned();
                return Err(HeadError::Host(HostError::Invalid(value)));
            }
            Some(target.start + at..target.start + at + len)
        }
    };
    let mut hosts = 0;
    let mut length = None;
    let mut codings: Option<Vec<&[u8]>> = None;
    let mut rewrite = authority.is_some();
    let mut close = false;
    let mut keep_alive = false;
    let mut upgrade_token = false;
    let mut upgrade_header = None;
    let mut expect_continue = false;
    let mut probe = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(content_length(h.value, length)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.get_or_insert_with(Vec::new).extend(tokens(h.value));
            // Passed on as it is only when it is exactly `chunked`.
            rewrite |= h.value != b"chunked";
        } else if name.eq_ignore_ascii_case("expect") {
            rewrite = true;
            // HTTP/1.0 callers cannot expect (RFC 9110 §10.1.1: ignored).
            if http10 {
                continue;
            }
            if !trim_ows(h.value).eq_ignore_ascii_case(b"100-continue") {
                let value = String::from_utf8_lossy(h.value).into_owned();
                return Err(HeadError::Expectation(value));
            }
            expect_continue = true;
        } else if name.eq_ignore_ascii_case("connection") {
            rewrite = true;
            for t in tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                upgrade_token |= t.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            rewrite = true;
            upgrade_header = Some(range(buf, h.value));
        } else if name.eq_ignore_ascii_case("te") {
            // Kept as it is only when it says exactly what is forwarded.
            rewrite |= !h.value.eq_ignore_ascii_case(b"trailers");
        } else if is_hop_by_hop(name) {
            rewrite = true;
        } else if name.eq_ignore_ascii_case("user-agent") {
            probe = h.value.starts_with(b"kube-probe/");
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(trim_ows(h.value)) {
                let value = String::from_utf8_lossy(h.value).into_owned();
                return Err(HeadError::Host(HostError::Invalid(value)));
            }
        }
    }
    match hosts {
        // HTTP/1.0 may leave Host out; HTTP/1.1 sends it even with an absolute-form
        // target, whose authority then replaces it.
        0 if !http10 => return Err(HeadError::Host(HostError::Missing)),
        0 | 1 => {}
        _ => return Err(HeadError::Host(HostError::Duplicate)),
    }
    let body = match (codings, length) {
        (Some(_), Some(_)) => return Err(HeadError::Ambiguous),
        (Some(_), None) if http10 => return Err(HeadError::Http10Coding),
        (Some(codings), None) => match codings.iter().find(|c| !c.eq_ignore_ascii_case(b"chunked"))
        {
            Some(other) => {
                let coding = String::from_utf8_lossy(other).into_owned();
                return Err(HeadError::UnsupportedCoding(coding));
            }
            // `chunked` once, and last (RFC 9112 §6.1).
            None if codings.len() == 1 => Body::Chunked,
            None => return Err(HeadError::UnsupportedCoding("chunked, chunked".into())),
        },
        (None, length) => Body::Length(length.unwrap_or(0)),
    };
    // HTTP/1.0 persists only when asked (RFC 9112 §9.3).
    close |= http10 && !keep_alive;
    let tunnel = if connect {
        Some(Tunnel::Connect)
    } else if upgrade_token && upgrade_header.is_some() && !http10 {
        Some(Tunnel::Upgrade)
    } else {
        None
    };
    // httparse takes a bare LF as a line end; a server that does not would read the
    // headers differently (a smuggling shape): such a head goes out rebuilt with CRLFs.
    rewrite |= bare_lf(&buf[..len]);
    Ok(Request::Complete(RequestInfo {
        len,
        method,
        target,
        body,
        rewrite,
        close,
        probe,
        http10,
        expect_continue,
        tunnel,
        authority,
        upgrade: upgrade_header,
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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

/// Reads the response head at the start of `buf`, answering what `asked` describes.
/// `Ok(None)`: not complete yet.
pub fn parse_response(buf: &[u8], asked: &Asked<'_>) -> Result<Option<ResponseInfo>, HeadError> {
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
    let switching = match asked.tunnel {
        Some(Tunnel::Upgrade) => status == 101,
        Some(Tunnel::Connect) => (200..300).contains(&status),
        None => false,
    };
    if status == 101 && !switching {
        return Err(HeadError::UnexpectedSwitch);
    }
    let http10 = resp.version == Some(0);
    let mut length = None;
    let mut chunked = None;
    // A switching response goes as it is: its Connection and Upgrade are the handshake.
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
            rewrite |= !switching;
            for t in tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if is_hop_by_hop(name) {
            rewrite |= !switching;
        } else if name.eq_ignore_ascii_case("x-braid-overloaded") {
            overloaded = true;
        }
    }
    // HTTP/1.0 with Transfer-Encoding: its framing is faulty, and the connection closes
    // after it even with keep-alive (RFC 9112 §6.1). An HTTP/1.0 request goes without
    // keep-alive, so its connection closes too.
    if (http10 && (!keep_alive || chunked.is_some())) || asked.http10 {
        close = true;
    }
    let interim = (100..200).contains(&status) && !switching;
    let framing = if switching {
        Framing::Tunnel
    } else if interim || status == 204 || status == 304 || *asked.method == http::Method::HEAD {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(_), Some(_)) => return Err(HeadError::Ambiguous),
            (Some(true), None) if asked.http10 => return Err(HeadError::ChunkedToHttp10),
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

/// Writes the request head `head` (described by `info`) to `out` as it goes upstream:
/// without hop-by-hop headers or those `Connection` names, without `Expect` (answered
/// here), with an absolute-form target's authority as Host, or `host` instead of the
/// Host when given (mirror copies). A chunked body says so; an upgrade keeps its
/// handshake; HTTP/1.0 stays HTTP/1.0.
pub fn write_request(head: &[u8], info: &RequestInfo, host: Option<&[u8]>, out: &mut Vec<u8>) {
    write_request_with(head, info, host, &[], out);
}

/// [`write_request`], with `edits` (an `x-request-id`, a trace context) replacing the
/// caller's headers of their names, or removing them (`None`).
pub fn write_request_with(
    head: &[u8],
    info: &RequestInfo,
    host: Option<&[u8]>,
    edits: &[(http::HeaderName, Option<http::HeaderValue>)],
    out: &mut Vec<u8>,
) {
    let mut storage = headers();
    let mut req = httparse::Request::new(&mut []);
    if parse_req(&mut req, head, &mut storage).is_err() {
        return;
    }
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(&info.forwarded_target(head));
    out.extend_from_slice(match info.http10 {
        true => b" HTTP/1.0\r\n",
        false => b" HTTP/1.1\r\n",
    });
    let host = host.or_else(|| info.authority.clone().and_then(|a| head.get(a)));
    if let Some(host) = host {
        write_header(out, b"host", host);
    }
    let named: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .collect();
    let upgrade = info.tunnel == Some(Tunnel::Upgrade);
    for h in req.headers.iter() {
        let name = h.name;
        let keep = if name.eq_ignore_ascii_case("te") {
            // Only `trailers` passes.
            if tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers")) {
                out.extend_from_slice(b"te: trailers\r\n");
            }
            false
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade
        } else if name.eq_ignore_ascii_case("host") {
            host.is_none()
        } else if name.eq_ignore_ascii_case("expect") {
            false
        } else if name.eq_ignore_ascii_case("content-length") {
            // Frames the body: kept even when `Connection` names it, or the upstream
            // would read the body as a request of its own.
            true
        } else if edits
            .iter()
            .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
        {
            false
        } else {
            !is_hop_by_hop(name)
                && !named
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        };
        if keep {
            write_header(out, name.as_bytes(), h.value);
        }
    }
    for (name, value) in edits {
        if let Some(value) = value {
            write_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if info.body == Body::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the caller's connection does after a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// It closes after this response.
    pub close: bool,
    /// The caller spoke HTTP/1.0: a connection it keeps is said to be kept.
    pub http10: bool,
}

/// Writes `head` (a response head described by `info`) to `out` as HTTP/1.1, without
/// its hop-by-hop headers, saying `Connection: close` when the body ends with the
/// connection or the caller's connection closes after it, and `Connection: keep-alive`
/// to an HTTP/1.0 caller whose connection stays.
pub fn rewrite_response(head: &[u8], info: &ResponseInfo, caller: Caller, out: &mut Vec<u8>) {
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
    let switching = info.framing == Framing::Tunnel;
    for h in resp.headers.iter() {
        // The body is relayed as framed: a chunked one keeps its Transfer-Encoding; a
        // switching response keeps its handshake.
        let keep =
            h.name.eq_ignore_ascii_case("transfer-encoding") || switching || !is_hop_by_hop(h.name);
        if keep {
            write_header(out, h.name.as_bytes(), h.value);
        }
    }
    if !switching && (caller.close || info.framing == Framing::UntilClose) {
        out.extend_from_slice(b"connection: close\r\n");
    } else if !switching && caller.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(buf: &[u8]) -> RequestInfo {
        match parse_request(buf, 1024).unwrap() {
            Request::Complete(info) => info,
            other => panic!("not complete: {other:?}"),
        }
    }

    fn forwarded(buf: &[u8]) -> Vec<u8> {
        let info = relay(buf);
        let mut out = Vec::new();
        write_request(&buf[..info.len], &info, None, &mut out);
        out
    }

    #[test]
    fn a_plain_get_is_relayed_as_it_is() {
        let buf = b"GET /api/items?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: wrk\r\n\r\nNEXT";
        let info = relay(buf);
        assert_eq!(info.len, buf.len() - 4);
        assert_eq!(info.method, http::Method::GET);
        assert_eq!(info.body, Body::Length(0));
        assert!(!info.rewrite && !info.close && !info.probe && !info.http10);
        assert_eq!(info.path(buf), "/api/items");
        assert_eq!(&buf[info.target.clone()], b"/api/items?x=1");
    }

    #[test]
    fn partial_heads_wait_and_huge_ones_are_refused() {
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost:", 1024),
            Ok(Request::Partial)
        );
        // Beyond the limit, complete or not: refused.
        let mut big = b"GET / HTTP/1.1\r\nx: ".to_vec();
        big.resize(1025, b'a');
        assert_eq!(parse_request(&big, 1024), Err(HeadError::TooLarge));
        big.extend_from_slice(b"\r\nHost: a\r\n\r\n");
        assert_eq!(parse_request(&big, 1024), Err(HeadError::TooLarge));
        assert!(matches!(
            parse_request(&big, 2048),
            Ok(Request::Complete(_))
        ));
        assert!(matches!(
            parse_request(b"\x16\x03\x01 junk\r\n\r\n", 0),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn bodies_are_framed_by_content_length() {
        let info = relay(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(info.body, Body::Length(5));
        assert_eq!(info.end(), Some(info.len + 5));
        assert!(info.within(info.len + 5) && !info.within(info.len + 4));
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad, 1024), Err(HeadError::ContentLength));
        }
        // The same value twice is one length.
        assert_eq!(
            relay(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n")
                .body,
            Body::Length(3)
        );
    }

    // Each of these went to a second engine (hyper) before; now the relay reads them.
    #[test]
    fn chunked_http10_expect_upgrade_and_connect_are_read_by_the_relay() {
        let chunked = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let info = relay(chunked);
        assert_eq!(info.body, Body::Chunked);
        assert!(!info.rewrite && !info.within(usize::MAX) && info.end().is_none());
        // A coding besides chunked: 501; chunked twice, or with a length: refused.
        for (bad, want) in [
            (
                &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
                HeadError::UnsupportedCoding("gzip".into()),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::UnsupportedCoding("chunked, chunked".into()),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                HeadError::Ambiguous,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HeadError::Http10Coding,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n",
                HeadError::Expectation("200-ok".into()),
            ),
        ] {
            assert_eq!(parse_request(bad, 1024), Err(want), "{}", bad.escape_ascii());
        }
        // `Transfer-Encoding: Chunked` goes on as the one spelling.
        let out = forwarded(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n"
        );

        // HTTP/1.0: no Host needed, closes unless kept alive, goes on as HTTP/1.0.
        let info = relay(b"GET / HTTP/1.0\r\n\r\n");
        assert!(info.http10 && info.close);
        let buf = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nX: 1\r\n\r\n";
        assert!(!relay(buf).close);
        assert_eq!(forwarded(buf), b"GET / HTTP/1.0\r\nX: 1\r\n\r\n");

        // 100-continue is answered by the proxy: the expectation stops here.
        let buf = b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
        assert!(relay(buf).expect_continue);
        assert_eq!(
            forwarded(buf),
            b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n"
        );
        assert!(!relay(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);

        // An upgrade keeps its handshake; Upgrade without Connection: upgrade is dropped.
        let buf = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        assert_eq!(relay(buf).tunnel, Some(Tunnel::Upgrade));
        // The protocol asked for is read from the head, hop-by-hop as its header is.
        assert_eq!(relay(buf).upgrade_protocol(buf), Some("websocket"));
        let h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade:  h2c \r\n\r\n";
        assert_eq!(relay(h2c).upgrade_protocol(h2c), Some("h2c"));
        assert_eq!(
            forwarded(buf),
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nconnection: upgrade\r\n\r\n"
        );
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(relay(buf).tunnel, None);
        assert_eq!(forwarded(buf), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let info = relay(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n");
        assert_eq!(info.tunnel, Some(Tunnel::Connect));

        // A framing field named as a connection option still frames the body (found by
        // review: the body reached the upstream as a request of its own).
        let buf = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, host\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            forwarded(buf),
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"
        );
        // Headers that Connection names stop here too.
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n\r\n";
        assert_eq!(
            forwarded(buf),
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Kept: 2\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_close_is_noted() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nKeep-Alive: 5\r\nTE: gzip, trailers\r\nProxy-Authorization: x\r\nX-Kept: 1\r\n\r\n";
        let info = relay(buf);
        assert!(info.rewrite && info.close);
        assert_eq!(
            forwarded(buf),
            b"GET / HTTP/1.1\r\nHost: a\r\nte: trailers\r\nX-Kept: 1\r\n\r\n"
        );
        // `TE: trailers` alone is forwarded untouched.
        assert!(!relay(b"POST / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n").rewrite);
    }

    #[test]
    fn heads_with_bare_line_feeds_go_out_rebuilt_with_crlf() {
        let buf = b"POST / HTTP/1.1\r\nHost: a\r\nX: a\nContent-Length: 2\r\n\r\nok";
        assert!(relay(buf).rewrite);
        assert_eq!(
            forwarded(buf),
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
        // An absolute-form target's authority replaces Host (RFC 9112 §3.2.2).
        let abs = b"GET http://svc.ns:80/v1/x?q HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        assert_eq!(relay(abs).path(abs), "/v1/x");
        assert_eq!(
            forwarded(abs),
            b"GET /v1/x?q HTTP/1.1\r\nhost: svc.ns:80\r\nX: 1\r\n\r\n"
        );
        let bare = b"GET http://svc?q HTTP/1.1\r\nHost: svc\r\n\r\n";
        assert_eq!(forwarded(bare), b"GET /?q HTTP/1.1\r\nhost: svc\r\n\r\n");
        assert!(matches!(
            parse_request(b"GET http://u@svc/ HTTP/1.1\r\nHost: svc\r\n\r\n", 1024),
            Err(HeadError::Host(_))
        ));
    }

    fn response(buf: &[u8], method: http::Method) -> ResponseInfo {
        parse_response(buf, &Asked::plain(&method))
            .unwrap()
            .unwrap()
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
            assert_eq!(parse_request(buf, 1024), Err(HeadError::Host(want)));
        }
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 1024),
            Ok(Request::Complete(_))
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
                &Asked::plain(&get)
            ),
            Err(HeadError::Ambiguous)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 101 Switching\r\n\r\n", &Asked::plain(&get)),
            Err(HeadError::UnexpectedSwitch)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", &Asked::plain(&get)),
            Ok(None)
        );
        // A tunnel asked for and granted; a 101 or 2xx otherwise is what it says.
        let upgrade = Asked {
            tunnel: Some(Tunnel::Upgrade),
            ..Asked::plain(&get)
        };
        let buf = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let r = parse_response(buf, &upgrade).unwrap().unwrap();
        assert_eq!(
            (r.framing, r.rewrite, r.interim),
            (Framing::Tunnel, false, false)
        );
        let connect = http::Method::CONNECT;
        let tunnel = Asked {
            tunnel: Some(Tunnel::Connect),
            ..Asked::plain(&connect)
        };
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", &tunnel)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Tunnel);
        let r = parse_response(b"HTTP/1.1 403 No\r\nContent-Length: 0\r\n\r\n", &tunnel)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Empty);
        // An HTTP/1.0 request's connection closes after it; chunked cannot answer it.
        let old = Asked {
            http10: true,
            ..Asked::plain(&get)
        };
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", &old)
            .unwrap()
            .unwrap();
        assert!(r.close);
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                &old
            ),
            Err(HeadError::ChunkedToHttp10)
        );
    }

    // Found by the property tests (`props`): each read differently from RFC 9112.
    #[test]
    fn only_spaces_and_tabs_surround_a_length_or_a_coding() {
        let get = http::Method::GET;
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xa05\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\xc2\x85\r\n\r\n",
        ] {
            assert_eq!(
                parse_response(bad, &Asked::plain(&get)),
                Err(HeadError::ContentLength)
            );
        }
        assert_eq!(
            parse_request(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\xc2\xa0\r\n\r\n",
                1024
            ),
            Err(HeadError::ContentLength)
        );
        assert_eq!(
            relay(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \t5 \r\n\r\n").body,
            Body::Length(5)
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
                parse_response(bad, &Asked::plain(&http::Method::GET)),
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
        rewrite_response(&buf[..r.len], &r, Caller::default(), &mut out);
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
        rewrite_response(&buf[..r.len], &r, Caller::default(), &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: x\r\nconnection: close\r\n\r\n"
        );
    }
}
