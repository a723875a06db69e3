//! Trace context in and out of a request: W3C `traceparent`/`tracestate`, and B3 (the
//! single `b3` header or the `x-b3-*` set) for apps instrumented with Zipkin's
//! libraries. Each proxy hop is a span of its own: the request goes on with this hop's
//! span as its parent, in the caller's format and in W3C's.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanId, TraceId};

/// W3C's header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// How the caller carried its context, so the next hop gets it the same way too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// `traceparent` (and `tracestate`).
    W3c,
    /// One `b3` header.
    B3Single,
    /// `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled`, …
    B3Multi,
}

/// The trace context a request arrived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// The caller's span, this hop's parent (none: B3 with a trace but no span).
    pub parent: Option<SpanId>,
    /// What the caller decided about sampling (none: it left the decision to us).
    pub sampled: Option<bool>,
    /// How it was carried.
    pub carrier: Carrier,
}

/// This hop's span: what goes on to the next hop, and what is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSpan {
    /// The trace it belongs to: the caller's, or a new one.
    pub trace_id: TraceId,
    /// This hop's own span.
    pub span_id: SpanId,
    /// The caller's span.
    pub parent: Option<SpanId>,
    /// Whether it is exported (and the next hop told so).
    pub sampled: bool,
    /// How the caller carried its context (none: it sent none).
    pub carrier: Option<Carrier>,
}

/// Reads the caller's trace context: W3C's when valid, else B3's. An invalid header is
/// ignored (the request starts a new trace), as W3C asks.
pub fn extract(headers: &HeaderMap) -> Option<Incoming> {
    w3c(headers)
        .or_else(|| b3_single(headers))
        .or_else(|| b3_multi(headers))
}

/// A new span for this hop: a child of `incoming`, or the root of a new trace. A caller's
/// sampling decision stands; otherwise `sample()` decides.
pub fn hop(incoming: Option<&Incoming>, sample: impl FnOnce() -> bool) -> HopSpan {
    let span_id = random_span_id();
    match incoming {
        Some(i) => HopSpan {
            trace_id: i.trace_id,
            span_id,
            parent: i.parent,
            sampled: i.sampled.unwrap_or_else(sample),
            carrier: Some(i.carrier),
        },
        None => HopSpan {
            trace_id: random_trace_id(),
            span_id,
            parent: None,
            sampled: sample(),
            carrier: None,
        },
    }
}

impl HopSpan {
    /// The headers the request goes on with, each replacing any of its name: W3C's
    /// `traceparent` always (`tracestate` passes unchanged), and B3's in the form the
    /// caller used.
    pub fn outgoing(&self) -> Vec<(HeaderName, HeaderValue)> {
        let trace = format!("{:032x}", self.trace_id);
        let span = format!("{:016x}", self.span_id);
        let sampled = if self.sampled { "1" } else { "0" };
        let mut out = Vec::with_capacity(4);
        let value = |s: String| HeaderValue::from_str(&s).ok();
        if let Some(v) = value(format!("00-{trace}-{span}-0{sampled}")) {
            out.push((TRACEPARENT, v));
        }
        match self.carrier {
            Some(Carrier::B3Single) => {
                let parent = self
                    .parent
                    .map(|p| format!("-{p:016x}"))
                    .unwrap_or_default();
                if let Some(v) = value(format!("{trace}-{span}-{sampled}{parent}")) {
                    out.push((B3, v));
                }
            }
            Some(Carrier::B3Multi) => {
                out.extend(value(trace).map(|v| (B3_TRACE_ID, v)));
                out.extend(value(span).map(|v| (B3_SPAN_ID, v)));
                if let Some(p) = self.parent {
                    out.extend(value(format!("{p:016x}")).map(|v| (B3_PARENT_SPAN_ID, v)));
                }
                out.push((B3_SAMPLED, HeaderValue::from_static(sampled)));
            }
            Some(Carrier::W3c) | None => {}
        }
        out
    }

    /// The trace id as logs show it.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as logs show it.
    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

fn random_trace_id() -> TraceId {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return TraceId::from(id);
        }
    }
}

fn random_span_id() -> SpanId {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return SpanId::from(id);
        }
    }
}

/// Lowercase hex of exactly `N` bytes, not all zero.
fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    out.iter().any(|b| *b != 0).then_some(out)
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, padded on the left).
fn b3_trace_id(s: &str) -> Option<TraceId> {
    let s = s.to_ascii_lowercase();
    match s.len() {
        16 => hex::<8>(&s).map(|low| {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            TraceId::from_bytes(id)
        }),
        _ => hex::<16>(&s).map(TraceId::from_bytes),
    }
}

fn b3_span_id(s: &str) -> Option<SpanId> {
    hex::<8>(&s.to_ascii_lowercase()).map(SpanId::from_bytes)
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2). A later version is read by
/// its version 00 fields, as the spec asks.
fn w3c(headers: &HeaderMap) -> Option<Incoming> {
    let value = header(headers, &TRACEPARENT)?;
    let mut parts = value.splitn(5, '-');
    let version = hex::<1>(parts.next()?).map(|v| v[0]).or_else(|| {
        // Version 00 is all zeros, which `hex` refuses; accept it here.
        (value.starts_with("00-")).then_some(0)
    })?;
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version == 0xff || (version == 0 && rest.is_some()) {
        return None;
    }
    let flags = match flags.len() {
        2 => u8::from_str_radix(flags, 16).ok()?,
        _ => return None,
    };
    Some(Incoming {
        trace_id: TraceId::from_bytes(hex::<16>(trace)?),
        parent: Some(SpanId::from_bytes(hex::<8>(parent)?)),
        sampled: Some(flags & 1 == 1),
        carrier: Carrier::W3c,
    })
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or `b3: {sampled}` alone.
fn b3_single(headers: &HeaderMap) -> Option<Incoming> {
    let value = header(headers, &B3)?;
    let mut parts = value.split('-');
    let trace = parts.next()?;
    let Some(span) = parts.next() else {
        // A decision without a context: nothing to continue.
        return None;
    };
    let sampled = match parts.next() {
        None => None,
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        Some(_) => return None,
    };
    Some(Incoming {
        trace_id: b3_trace_id(trace)?,
        parent: Some(b3_span_id(span)?),
        sampled,
        carrier: Carrier::B3Single,
    })
}

/// `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` (`1`/`0`, or `true`/`false` from old
/// clients) and `x-b3-flags: 1` (debug: sampled).
fn b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let trace_id = b3_trace_id(header(headers, &B3_TRACE_ID)?)?;
    let parent = match header(headers, &B3_SPAN_ID) {
        Some(s) => Some(b3_span_id(s)?),
        None => None,
    };
    let debug = header(headers, &B3_FLAGS) == Some("1");
    let sampled = match header(headers, &B3_SAMPLED) {
        _ if debug => Some(true),
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        _ => None,
    };
    Some(Incoming {
        trace_id,
        parent,
        sampled,
        carrier: Carrier::B3Multi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn w3c_traceparent_is_read_and_a_child_goes_on() {
        let tp = format!("00-{TRACE}-{SPAN}-01");
        let incoming = extract(&headers(&[("traceparent", &tp)])).unwrap();
        assert_eq!(format!("{:032x}", incoming.trace_id), TRACE);
        assert_eq!(incoming.sampled, Some(true));
        let span = hop(Some(&incoming), || panic!("the caller decided"));
        assert_eq!(span.trace_hex(), TRACE);
        assert_eq!(span.parent, incoming.parent);
        assert_ne!(span.span_hex(), SPAN);
        let out = span.outgoing();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].1.to_str().unwrap(),
            format!("00-{TRACE}-{}-01", span.span_hex())
        );
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00-{TRACE}-{SPAN}-1"),
            format!("00-{TRACE}-{SPAN}"),
            "garbage".to_owned(),
        ] {
            assert_eq!(extract(&headers(&[("traceparent", &bad)])), None, "{bad}");
        }
        // A later version is read by version 00's fields.
        let later = format!("01-{TRACE}-{SPAN}-00-what-comes-later");
        let incoming = extract(&headers(&[("traceparent", &later)])).unwrap();
        assert_eq!(incoming.sampled, Some(false));
    }

    #[test]
    fn no_context_starts_a_root_span_sampled_as_asked() {
        let root = hop(None, || true);
        assert!(root.sampled && root.parent.is_none() && root.carrier.is_none());
        assert!(!hop(None, || false).sampled);
        assert_ne!(hop(None, || true).trace_id, root.trace_id);
    }

    #[test]
    fn b3_single_and_multi_are_read_and_passed_on_in_their_form() {
        let single = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-1"))])).unwrap();
        assert_eq!(
            (single.carrier, single.sampled),
            (Carrier::B3Single, Some(true))
        );
        let span = hop(Some(&single), || false);
        let out = span.outgoing();
        assert_eq!(out[1].0, B3);
        assert_eq!(
            out[1].1.to_str().unwrap(),
            format!("{TRACE}-{}-1-{SPAN}", span.span_hex())
        );
        // A 64-bit trace id, no decision: ours is taken.
        let short = extract(&headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", SPAN),
        ]))
        .unwrap();
        assert_eq!(
            format!("{:032x}", short.trace_id),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert_eq!(short.sampled, None);
        let span = hop(Some(&short), || true);
        assert!(span.sampled);
        let names: Vec<_> = span.outgoing().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                TRACEPARENT,
                B3_TRACE_ID,
                B3_SPAN_ID,
                B3_PARENT_SPAN_ID,
                B3_SAMPLED
            ]
        );
        let debug = extract(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]))
        .unwrap();
        assert_eq!(debug.sampled, Some(true));
        // W3C wins over B3 when both came.
        let both = extract(&headers(&[
            ("b3", &format!("{TRACE}-{SPAN}-0")),
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ]))
        .unwrap();
        assert_eq!(both.carrier, Carrier::W3c);
        // A bare decision carries no context.
        assert_eq!(extract(&headers(&[("b3", "0")])), None);
    }
}
