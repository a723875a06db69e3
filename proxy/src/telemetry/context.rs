//! Trace context in and out of a request: W3C `traceparent`/`tracestate`, and B3 (the
//! single `b3` header or the `x-b3-*` set) for apps instrumented with Zipkin's
//! libraries. Each proxy hop is a span of its own: the request goes on with this hop's
//! span as its parent, in W3C's format and in every B3 format the caller used, so an app
//! that reads either sees the same parent.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanId, TraceId};

/// W3C's header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// A header the request goes on with (`Some`), or without (`None`), replacing any the
/// caller sent of that name.
pub type HeaderEdit = (HeaderName, Option<HeaderValue>);

/// The trace context a request arrived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// The caller's span, this hop's parent (none: B3 with a trace but no span).
    pub parent: Option<SpanId>,
    /// Whether it came in a valid `traceparent` (its `tracestate` then goes on too).
    pub w3c: bool,
}

/// What the caller said of tracing, in whichever formats it used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The trace to continue: W3C's when valid, else B3's.
    pub context: Option<Incoming>,
    /// Its sampling decision, even one sent without a context (`b3: 0`).
    pub sampled: Option<bool>,
    /// B3's debug flag (`b3: …-d`, `x-b3-flags: 1`): sampled, and said so onward.
    pub debug: bool,
    /// It sent a `b3` header.
    pub b3_single: bool,
    /// It sent `x-b3-*` headers.
    pub b3_multi: bool,
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
    debug: bool,
    /// The caller's `tracestate` belongs to this trace.
    keeps_state: bool,
    b3_single: bool,
    b3_multi: bool,
}

/// Reads what the caller said of tracing. An invalid header is ignored (W3C asks that a
/// request with a broken `traceparent` start a new trace).
pub fn extract(headers: &HeaderMap) -> Caller {
    let single = headers.contains_key(B3).then(|| b3_single(headers));
    let multi = headers.contains_key(B3_SAMPLED) || headers.contains_key(B3_TRACE_ID);
    let multi = multi.then(|| b3_multi(headers));
    let w3c = w3c(headers);
    let decided = w3c
        .as_ref()
        .map(|(_, sampled)| (*sampled, false))
        .or_else(|| single.as_ref().and_then(|b| b.decision))
        .or_else(|| multi.as_ref().and_then(|b| b.decision));
    let context = w3c
        .map(|(i, _)| i)
        .or_else(|| single.as_ref().and_then(|b| b.context.clone()))
        .or_else(|| multi.as_ref().and_then(|b| b.context.clone()));
    // W3C has no debug flag: a B3 form of the same trace carries it across hops that
    // decided by traceparent.
    let same_trace = |b: &B3Said| match (&b.context, &context) {
        (Some(said), Some(chosen)) => said.trace_id == chosen.trace_id,
        (None, None) => true,
        _ => false,
    };
    let debug = [single.as_ref(), multi.as_ref()]
        .into_iter()
        .flatten()
        .any(|b| same_trace(b) && b.decision.is_some_and(|(_, debug)| debug));
    Caller {
        context,
        sampled: decided.map(|(s, _)| s || debug),
        debug,
        b3_single: single.is_some(),
        b3_multi: multi.is_some(),
    }
}

/// A new span for this hop: a child of the caller's, or the root of a new trace. A
/// caller's sampling decision stands; otherwise `sample()` decides.
pub fn hop(caller: &Caller, sample: impl FnOnce() -> bool) -> HopSpan {
    let (trace_id, parent, keeps_state) = match &caller.context {
        Some(i) => (i.trace_id, i.parent, i.w3c),
        None => (random_trace_id(), None, false),
    };
    HopSpan {
        trace_id,
        span_id: random_span_id(),
        parent,
        sampled: caller.sampled.unwrap_or_else(sample),
        debug: caller.debug,
        keeps_state,
        b3_single: caller.b3_single,
        b3_multi: caller.b3_multi,
    }
}

impl HopSpan {
    /// The headers the request goes on with: `traceparent` naming this hop's span;
    /// `tracestate` only with the trace it came with; and B3 in each form the caller
    /// used, so no header still names the caller's span as the parent.
    pub fn outgoing(&self) -> Vec<HeaderEdit> {
        let trace = format!("{:032x}", self.trace_id);
        let span = format!("{:016x}", self.span_id);
        let sampled = if self.sampled { "1" } else { "0" };
        let value = |s: String| HeaderValue::from_str(&s).ok();
        let mut out = vec![(TRACEPARENT, value(format!("00-{trace}-{span}-0{sampled}")))];
        if !self.keeps_state {
            out.push((TRACESTATE, None));
        }
        let parent = self.parent.map(|p| format!("{p:016x}"));
        if self.b3_single {
            let decision = if self.debug { "d" } else { sampled };
            let parent = parent.as_ref().map(|p| format!("-{p}")).unwrap_or_default();
            out.push((B3, value(format!("{trace}-{span}-{decision}{parent}"))));
        }
        if self.b3_multi {
            out.push((B3_TRACE_ID, value(trace)));
            out.push((B3_SPAN_ID, value(span)));
            out.push((B3_PARENT_SPAN_ID, parent.and_then(value)));
            // Debug is x-b3-flags: 1, which B3 sends instead of x-b3-sampled.
            let (flags, sampled) = match self.debug {
                true => (Some(HeaderValue::from_static("1")), None),
                false => (None, Some(HeaderValue::from_static(sampled))),
            };
            out.push((B3_FLAGS, flags));
            out.push((B3_SAMPLED, sampled));
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

/// Lowercase hex of exactly `N` bytes.
fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex of exactly `N` bytes, not all zero (an id).
fn id<const N: usize>(s: &str) -> Option<[u8; N]> {
    hex_bytes::<N>(s).filter(|b| b.iter().any(|x| *x != 0))
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, padded on the left).
fn b3_trace_id(s: &str) -> Option<TraceId> {
    let s = s.to_ascii_lowercase();
    match s.len() {
        16 => id::<8>(&s).map(|low| {
            let mut full = [0u8; 16];
            full[8..].copy_from_slice(&low);
            TraceId::from_bytes(full)
        }),
        _ => id::<16>(&s).map(TraceId::from_bytes),
    }
}

fn b3_span_id(s: &str) -> Option<SpanId> {
    id::<8>(&s.to_ascii_lowercase()).map(SpanId::from_bytes)
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2), with its sampled flag. A
/// later version is read by its version 00 fields, as the spec asks.
fn w3c(headers: &HeaderMap) -> Option<(Incoming, bool)> {
    let value = header(headers, &TRACEPARENT)?;
    let mut parts = value.splitn(5, '-');
    let version = hex_bytes::<1>(parts.next()?)?[0];
    let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version == 0xff || (version == 0 && rest.is_some()) {
        return None;
    }
    let flags = hex_bytes::<1>(flags)?[0];
    let incoming = Incoming {
        trace_id: TraceId::from_bytes(id::<16>(trace)?),
        parent: Some(SpanId::from_bytes(id::<8>(parent)?)),
        w3c: true,
    };
    Some((incoming, flags & 1 == 1))
}

/// What one B3 form said: a context, and a decision (with the debug flag).
struct B3Said {
    context: Option<Incoming>,
    decision: Option<(bool, bool)>,
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or `b3: {sampled}` alone.
fn b3_single(headers: &HeaderMap) -> B3Said {
    let none = B3Said {
        context: None,
        decision: None,
    };
    let Some(value) = header(headers, &B3) else {
        return none;
    };
    let decision = |s: &str| match s {
        "1" => Some((true, false)),
        "0" => Some((false, false)),
        "d" => Some((true, true)),
        _ => None,
    };
    let parts: Vec<&str> = value.split('-').collect();
    match parts[..] {
        [alone] => B3Said {
            context: None,
            decision: decision(alone),
        },
        [trace, span, ref rest @ ..] if rest.len() <= 2 => {
            let decided = match rest.first() {
                Some(s) => match decision(s) {
                    Some(d) => Some(d),
                    None => return none,
                },
                None => None,
            };
            if rest.get(1).is_some_and(|p| b3_span_id(p).is_none()) {
                return none;
            }
            match (b3_trace_id(trace), b3_span_id(span)) {
                (Some(trace_id), Some(span)) => B3Said {
                    context: Some(Incoming {
                        trace_id,
                        parent: Some(span),
                        w3c: false,
                    }),
                    decision: decided,
                },
                _ => none,
            }
        }
        _ => none,
    }
}

/// `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` (`1`/`0`, or `true`/`false` from old
/// clients) and `x-b3-flags: 1` (debug: sampled).
fn b3_multi(headers: &HeaderMap) -> B3Said {
    let debug = header(headers, &B3_FLAGS) == Some("1");
    let decision = match header(headers, &B3_SAMPLED) {
        _ if debug => Some((true, true)),
        Some("1" | "true") => Some((true, false)),
        Some("0" | "false") => Some((false, false)),
        _ => None,
    };
    let trace_id = header(headers, &B3_TRACE_ID).and_then(b3_trace_id);
    let parent = match header(headers, &B3_SPAN_ID) {
        Some(s) => b3_span_id(s).map(Some),
        None => Some(None),
    };
    let context = match (trace_id, parent) {
        (Some(trace_id), Some(parent)) => Some(Incoming {
            trace_id,
            parent,
            w3c: false,
        }),
        _ => None,
    };
    B3Said { context, decision }
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

    /// The edits as `name: value` (or `name: -` for a removal), in order.
    fn shown(edits: &[HeaderEdit]) -> Vec<String> {
        edits
            .iter()
            .map(|(n, v)| match v {
                Some(v) => format!("{n}: {}", v.to_str().unwrap()),
                None => format!("{n}: -"),
            })
            .collect()
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn w3c_traceparent_is_read_and_a_child_goes_on() {
        let tp = format!("00-{TRACE}-{SPAN}-01");
        let caller = extract(&headers(&[("traceparent", &tp), ("tracestate", "k=v")]));
        let incoming = caller.context.clone().unwrap();
        assert_eq!(format!("{:032x}", incoming.trace_id), TRACE);
        assert_eq!(caller.sampled, Some(true));
        let span = hop(&caller, || panic!("the caller decided"));
        assert_eq!(span.trace_hex(), TRACE);
        assert_eq!(span.parent, incoming.parent);
        assert_ne!(span.span_hex(), SPAN);
        // tracestate goes on untouched with its trace.
        assert_eq!(
            shown(&span.outgoing()),
            [format!("traceparent: 00-{TRACE}-{}-01", span.span_hex())]
        );
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace_without_the_old_tracestate() {
        for bad in [
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("00-{TRACE}-{SPAN}-1"),
            format!("00-{TRACE}-{SPAN}-+1"),
            format!("00-{TRACE}-{SPAN}-0A"),
            format!("00-{TRACE}-{SPAN}"),
            "garbage".to_owned(),
        ] {
            let caller = extract(&headers(&[("traceparent", &bad), ("tracestate", "k=v")]));
            assert_eq!(caller, Caller::default(), "{bad}");
            let span = hop(&caller, || true);
            assert_eq!(shown(&span.outgoing())[1], "tracestate: -", "{bad}");
        }
        // A later version is read by version 00's fields.
        let later = format!("01-{TRACE}-{SPAN}-00-what-comes-later");
        let caller = extract(&headers(&[("traceparent", &later)]));
        assert_eq!(caller.sampled, Some(false));
        assert!(caller.context.is_some());
    }

    #[test]
    fn no_context_starts_a_root_span_sampled_as_asked() {
        let root = hop(&Caller::default(), || true);
        assert!(root.sampled && root.parent.is_none());
        assert!(!hop(&Caller::default(), || false).sampled);
        assert_ne!(hop(&Caller::default(), || true).trace_id, root.trace_id);
    }

    #[test]
    fn b3_single_and_multi_are_read_and_passed_on_in_their_form() {
        let single = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-1"))]));
        assert_eq!(single.sampled, Some(true));
        let span = hop(&single, || false);
        assert_eq!(
            shown(&span.outgoing())[2],
            format!("b3: {TRACE}-{}-1-{SPAN}", span.span_hex())
        );
        // A 64-bit trace id, no decision: ours is taken.
        let short = extract(&headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", SPAN),
        ]));
        assert_eq!(
            format!("{:032x}", short.context.as_ref().unwrap().trace_id),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert_eq!(short.sampled, None);
        let span = hop(&short, || true);
        let sent = shown(&span.outgoing());
        assert_eq!(sent[3], format!("x-b3-spanid: {}", span.span_hex()));
        assert_eq!(sent[4], format!("x-b3-parentspanid: {SPAN}"));
        assert_eq!(sent[5], "x-b3-flags: -");
        assert_eq!(sent[6], "x-b3-sampled: 1");
        // Debug: sampled, and said so onward.
        let debug = extract(&headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]));
        assert_eq!((debug.sampled, debug.debug), (Some(true), true));
        let sent = shown(&hop(&debug, || false).outgoing());
        assert!(sent.contains(&"x-b3-flags: 1".to_owned()), "{sent:?}");
        assert!(sent.contains(&"x-b3-sampled: -".to_owned()), "{sent:?}");
        let single_debug = extract(&headers(&[("b3", &format!("{TRACE}-{SPAN}-d"))]));
        let span = hop(&single_debug, || false);
        assert!(shown(&span.outgoing())[2].contains("-d-"));
        // The next hop decides by traceparent, which has no debug flag: the b3 header
        // of the same trace still carries it on.
        let mut next = HeaderMap::new();
        for (name, value) in span.outgoing() {
            if let Some(v) = value {
                next.insert(name, v);
            }
        }
        let second = hop(&extract(&next), || false);
        assert!(second.sampled);
        let sent = shown(&second.outgoing());
        assert!(
            sent.iter()
                .any(|h| h.starts_with("b3: ") && h.contains("-d-")),
            "{sent:?}"
        );
        // Bad fields make the header say nothing.
        for bad in [
            format!("{TRACE}-{SPAN}-x"),
            format!("{TRACE}-{SPAN}-1-nothex"),
            format!("{TRACE}-{SPAN}-1-{SPAN}-more"),
        ] {
            assert_eq!(extract(&headers(&[("b3", &bad)])).context, None, "{bad}");
        }
    }

    #[test]
    fn every_format_the_caller_sent_names_this_hop() {
        // OpenTelemetry's `tracecontext,b3` propagators send both: both go on naming
        // this hop, or an app reading B3 would parent to the caller's span.
        let caller = extract(&headers(&[
            ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
            ("b3", &format!("{TRACE}-{SPAN}-1")),
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
        ]));
        assert!(caller.context.as_ref().unwrap().w3c);
        let span = hop(&caller, || false);
        let sent = shown(&span.outgoing());
        let me = span.span_hex();
        assert!(
            sent.iter()
                .any(|h| h == &format!("b3: {TRACE}-{me}-1-{SPAN}")),
            "{sent:?}"
        );
        assert!(
            sent.iter().any(|h| h == &format!("x-b3-spanid: {me}")),
            "{sent:?}"
        );
        assert!(
            !sent.iter().any(|h| h.starts_with("tracestate")),
            "{sent:?}"
        );
    }

    #[test]
    fn a_decision_without_a_context_stands() {
        for (said, sampled) in [
            (vec![("b3", "0")], false),
            (vec![("b3", "1")], true),
            (vec![("x-b3-sampled", "0")], false),
        ] {
            let caller = extract(&headers(&said));
            assert_eq!(caller.context, None, "{said:?}");
            let span = hop(&caller, || !sampled);
            assert_eq!(span.sampled, sampled, "{said:?}");
            assert!(span.parent.is_none());
        }
        // A new trace with no parent sends no stale parent id on.
        let caller = extract(&headers(&[("x-b3-sampled", "1")]));
        let sent = shown(&hop(&caller, || false).outgoing());
        assert!(
            sent.contains(&"x-b3-parentspanid: -".to_owned()),
            "{sent:?}"
        );
    }
}
