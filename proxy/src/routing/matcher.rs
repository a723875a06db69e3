//! One `match` entry compiled: header names parsed, regexes built and anchored.

use http::HeaderName;
use regex::Regex;

use super::RequestHead;
use crate::config::InvalidField;
use crate::config::routes::{PathMatch, RequestMatch, ValueMatch};

/// A compiled string condition.
#[derive(Clone, Debug)]
enum StringMatch {
    Exact(String),
    Prefix(String),
    /// A path prefix, segment-wise: `/api` matches `/api` and `/api/x`, not `/apix` (an
    /// AccessPolicy allowing `/public` must not allow `/publicadmin`).
    PathPrefix(String),
    Regex(Regex),
}

impl StringMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::PathPrefix(s) => value
                .strip_prefix(s.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || s.ends_with('/')),
            Self::Regex(r) => r.is_match(value),
        }
    }

    /// What a value must be, in words (`"transfer"`, `a value starting with "gold"`).
    fn wanted(&self) -> String {
        match self {
            Self::Exact(s) => format!("{s:?}"),
            Self::Prefix(s) | Self::PathPrefix(s) => format!("a value starting with {s:?}"),
            Self::Regex(r) => format!("a value matching {:?}", pattern(r)),
        }
    }

    /// Why the path `path` fails this condition, in words (the condition does not hold).
    fn path_mismatch(&self, path: &str) -> String {
        match self {
            Self::Exact(s) => format!("path {path} is not {s}"),
            Self::Prefix(s) => format!("path {path} does not start with {s}"),
            Self::PathPrefix(s) if path.starts_with(s.as_str()) => {
                format!("path {path} does not start with {s} as a whole segment")
            }
            Self::PathPrefix(s) => format!("path {path} does not start with {s}"),
            Self::Regex(r) => format!("path {path} does not match {:?}", pattern(r)),
        }
    }
}

/// The pattern of a regex compiled by [`whole`], as written.
fn pattern(r: &Regex) -> &str {
    let anchored = r.as_str();
    anchored
        .strip_prefix("^(?:")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap_or(anchored)
}

/// A compiled header condition.
#[derive(Clone, Debug)]
enum HeaderCondition {
    Value(StringMatch),
    Present(bool),
}

/// One `match` entry, ready to test requests: every condition must hold.
#[derive(Clone, Debug)]
pub struct CompiledMatch {
    headers: Vec<(HeaderName, HeaderCondition)>,
    path: Option<StringMatch>,
    method: Option<http::Method>,
}

/// Why a `regex` of a match cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RegexError {
    /// It is not RE2 syntax (the words the CRD validation uses too).
    #[error("{pattern:?} is not a valid regular expression (RE2 syntax): {reason}")]
    Syntax {
        /// The pattern as written.
        pattern: String,
        /// The regex crate's reason, without its picture of the pattern.
        reason: String,
    },
    /// It compiles to more than the regex crate allows.
    #[error(
        "{pattern:?} compiles to more than {limit} bytes: simplify it (fewer alternatives, smaller counted repetitions)"
    )]
    TooBig {
        /// The pattern as written.
        pattern: String,
        /// The regex crate's limit.
        limit: usize,
    },
}

/// Compiles `pattern` to match whole values (RE2 semantics as in Istio: `abc` does not
/// match `xabcx`).
fn whole(pattern: &str) -> Result<Regex, RegexError> {
    // The pattern must stand on its own first: `a)|(?:b` is not a regex, but wrapped it
    // would become `^(?:a)|(?:b)$`, which matches any value starting with `a`. This also
    // takes the reason from the pattern as written, not its anchored form.
    Regex::new(pattern)
        .and_then(|_| Regex::new(&format!("^(?:{pattern})$")))
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => RegexError::TooBig {
                pattern: pattern.to_owned(),
                limit,
            },
            other => RegexError::Syntax {
                pattern: pattern.to_owned(),
                reason: other
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_owned(),
            },
        })
}

impl CompiledMatch {
    /// Compiles `m`; the error names the field under `at`.
    pub fn compile(m: &RequestMatch, at: &str) -> Result<Self, InvalidField> {
        let mut headers = Vec::with_capacity(m.headers.len());
        for (i, h) in m.headers.iter().enumerate() {
            let here = format!("{at}.headers[{i}]");
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                InvalidField::new(
                    format!("{here}.name"),
                    format!("{:?} is not a header name", h.name),
                )
            })?;
            let condition = match &h.value {
                ValueMatch::Exact(s) => HeaderCondition::Value(StringMatch::Exact(s.clone())),
                ValueMatch::Prefix(s) => HeaderCondition::Value(StringMatch::Prefix(s.clone())),
                ValueMatch::Regex(p) => HeaderCondition::Value(StringMatch::Regex(
                    whole(p)
                        .map_err(|e| InvalidField::new(format!("{here}.regex"), e.to_string()))?,
                )),
                ValueMatch::Present(p) => HeaderCondition::Present(*p),
            };
            headers.push((name, condition));
        }
        let path = match &m.path {
            None => None,
            Some(PathMatch::Exact(s)) => Some(StringMatch::Exact(s.clone())),
            Some(PathMatch::Prefix(s)) => Some(StringMatch::PathPrefix(s.clone())),
            Some(PathMatch::Regex(p)) => {
                Some(StringMatch::Regex(whole(p).map_err(|e| {
                    InvalidField::new(format!("{at}.path.regex"), e.to_string())
                })?))
            }
        };
        let method = match &m.method {
            None => None,
            Some(s) => Some(http::Method::from_bytes(s.as_bytes()).map_err(|_| {
                InvalidField::new(
                    format!("{at}.method"),
                    format!("{s:?} is not an HTTP method"),
                )
            })?),
        };
        Ok(Self {
            headers,
            path,
            method,
        })
    }

    /// Whether it has header conditions (an HTTP/1.1 head is then parsed whole).
    pub fn reads_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// Whether `req` meets every condition. A header sent several times matches when
    /// any of its values does; a value that is not text matches no value condition.
    pub fn matches(&self, req: &RequestHead<'_>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return false;
        }
        if self.path.as_ref().is_some_and(|p| !p.matches(req.path)) {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, condition)| match condition {
                HeaderCondition::Present(want) => req.headers.contains_key(name) == *want,
                HeaderCondition::Value(m) => req
                    .headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| m.matches(v))),
            })
    }

    /// The first condition `req` fails, in words (`method is GET, not POST`, `header
    /// x-user is absent`), checked in the order [`CompiledMatch::matches`] checks them;
    /// `None` exactly when it matches.
    pub fn mismatch(&self, req: &RequestHead<'_>) -> Option<String> {
        if let Some(m) = self.method.as_ref().filter(|m| *m != req.method) {
            return Some(format!("method is {}, not {m}", req.method));
        }
        if let Some(p) = self.path.as_ref().filter(|p| !p.matches(req.path)) {
            return Some(p.path_mismatch(req.path));
        }
        self.headers.iter().find_map(|(name, condition)| {
            let mut values = req.headers.get_all(name).iter().peekable();
            match condition {
                HeaderCondition::Present(true) if values.peek().is_none() => {
                    Some(format!("header {name} is absent"))
                }
                HeaderCondition::Present(false) if values.peek().is_some() => {
                    Some(format!("header {name} is present"))
                }
                HeaderCondition::Present(_) => None,
                HeaderCondition::Value(_) if values.peek().is_none() => {
                    Some(format!("header {name} is absent"))
                }
                HeaderCondition::Value(m) => {
                    let mut seen = Vec::new();
                    for v in values {
                        match v.to_str() {
                            Ok(v) if m.matches(v) => return None,
                            Ok(v) => seen.push(format!("{v:?}")),
                            Err(_) => seen.push("(not text)".to_owned()),
                        }
                    }
                    Some(format!(
                        "header {name} is {}, not {}",
                        seen.join(", "),
                        m.wanted()
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::HeaderMatch;

    fn head<'a>(
        method: &'a http::Method,
        path: &'a str,
        headers: &'a http::HeaderMap,
    ) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            headers,
        }
    }

    fn header(name: &str, value: ValueMatch) -> HeaderMatch {
        HeaderMatch {
            name: name.into(),
            value,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn every_condition_must_hold() {
        let m = CompiledMatch::compile(
            &RequestMatch {
                headers: vec![header("type", ValueMatch::Exact("transfer".into()))],
                path: Some(PathMatch::Prefix("/api".into())),
                method: Some("POST".into()),
            },
            "rules[0].match[0]",
        )
        .unwrap();
        let transfer = headers(&[("type", "transfer")]);
        let other = headers(&[("type", "refund")]);
        assert!(m.matches(&head(&http::Method::POST, "/api/pay", &transfer)));
        assert!(!m.matches(&head(&http::Method::GET, "/api/pay", &transfer)));
        assert!(!m.matches(&head(&http::Method::POST, "/web", &transfer)));
        assert!(!m.matches(&head(&http::Method::POST, "/api/pay", &other)));
    }

    #[test]
    fn a_path_prefix_matches_whole_segments() {
        let prefix = |p: &str| {
            CompiledMatch::compile(
                &RequestMatch {
                    path: Some(PathMatch::Prefix(p.into())),
                    ..Default::default()
                },
                "m",
            )
            .unwrap()
        };
        let none = headers(&[]);
        let get = |m: &CompiledMatch, path| m.matches(&head(&http::Method::GET, path, &none));
        let api = prefix("/api");
        assert!(get(&api, "/api"));
        assert!(get(&api, "/api/"));
        assert!(get(&api, "/api/pay"));
        assert!(!get(&api, "/apix"), "as the CRD documents: segment-wise");
        assert!(!get(&api, "/ap"));
        let slash = prefix("/api/");
        assert!(get(&slash, "/api/pay"));
        assert!(!get(&slash, "/api"));
        assert!(get(&prefix("/"), "/anything"));
    }

    #[test]
    fn header_names_are_case_insensitive_and_any_repeated_value_may_match() {
        let m = CompiledMatch::compile(
            &RequestMatch {
                headers: vec![header("X-Tier", ValueMatch::Prefix("gold".into()))],
                ..Default::default()
            },
            "m",
        )
        .unwrap();
        let both = headers(&[("x-tier", "silver"), ("x-tier", "gold-plus")]);
        assert!(m.matches(&head(&http::Method::GET, "/", &both)));
        let none = headers(&[("x-tier", "silver")]);
        assert!(!m.matches(&head(&http::Method::GET, "/", &none)));
    }

    #[test]
    fn regexes_match_whole_values() {
        let m = CompiledMatch::compile(
            &RequestMatch {
                headers: vec![header("user", ValueMatch::Regex("[a-z]+-[0-9]".into()))],
                path: Some(PathMatch::Regex("/v[12]/.*".into())),
                ..Default::default()
            },
            "m",
        )
        .unwrap();
        let ok = headers(&[("user", "ann-7")]);
        let partial = headers(&[("user", "ann-7x")]);
        assert!(m.matches(&head(&http::Method::GET, "/v1/items", &ok)));
        assert!(!m.matches(&head(&http::Method::GET, "/v1/items", &partial)));
        assert!(!m.matches(&head(&http::Method::GET, "/api/v1/items", &ok)));
    }

    #[test]
    fn present_and_absent() {
        let compile = |p| {
            CompiledMatch::compile(
                &RequestMatch {
                    headers: vec![header("x-debug", ValueMatch::Present(p))],
                    ..Default::default()
                },
                "m",
            )
            .unwrap()
        };
        let with = headers(&[("x-debug", "")]);
        let without = headers(&[]);
        let get = &http::Method::GET;
        assert!(compile(true).matches(&head(get, "/", &with)));
        assert!(!compile(true).matches(&head(get, "/", &without)));
        assert!(compile(false).matches(&head(get, "/", &without)));
        assert!(!compile(false).matches(&head(get, "/", &with)));
    }

    #[test]
    fn bad_input_names_the_field() {
        let err = CompiledMatch::compile(
            &RequestMatch {
                headers: vec![
                    header("ok", ValueMatch::Present(true)),
                    header("user", ValueMatch::Regex("(unclosed".into())),
                ],
                ..Default::default()
            },
            "routes[0].rules[1].match[0]",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            r#"routes[0].rules[1].match[0].headers[1].regex: "(unclosed" is not a valid regular expression (RE2 syntax): error: unclosed group"#
        );
        let err = CompiledMatch::compile(
            &RequestMatch {
                method: Some("GE T".into()),
                ..Default::default()
            },
            "m",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("m.method"), "{err}");
    }

    #[test]
    fn a_mismatch_names_the_first_failing_condition() {
        let m = CompiledMatch::compile(
            &RequestMatch {
                headers: vec![
                    header("x-user", ValueMatch::Present(true)),
                    header("type", ValueMatch::Exact("transfer".into())),
                ],
                path: Some(PathMatch::Prefix("/api/".into())),
                method: Some("POST".into()),
            },
            "m",
        )
        .unwrap();
        let user = headers(&[("x-user", "ann"), ("type", "a")]);
        let none = headers(&[]);
        let post = &http::Method::POST;
        let why = |method, path, h| m.mismatch(&head(method, path, h));
        assert_eq!(
            why(&http::Method::GET, "/api/x", &user).as_deref(),
            Some("method is GET, not POST")
        );
        assert_eq!(
            why(post, "/a", &user).as_deref(),
            Some("path /a does not start with /api/")
        );
        assert_eq!(
            why(post, "/api/x", &none).as_deref(),
            Some("header x-user is absent")
        );
        assert_eq!(
            why(post, "/api/x", &user).as_deref(),
            Some(r#"header type is "a", not "transfer""#)
        );
        let transfer = headers(&[("x-user", "ann"), ("type", "a"), ("type", "transfer")]);
        assert_eq!(why(post, "/api/x", &transfer), None);
        let segment = CompiledMatch::compile(
            &RequestMatch {
                path: Some(PathMatch::Regex("/v[12]/.*".into())),
                headers: vec![header("x-debug", ValueMatch::Present(false))],
                ..Default::default()
            },
            "m",
        )
        .unwrap();
        assert_eq!(
            segment
                .mismatch(&head(post, "/v3/a", &headers(&[])))
                .as_deref(),
            Some(r#"path /v3/a does not match "/v[12]/.*""#)
        );
        assert_eq!(
            segment
                .mismatch(&head(post, "/v1/a", &headers(&[("x-debug", "1")])))
                .as_deref(),
            Some("header x-debug is present")
        );
    }

    /// A match entry from a small vocabulary, so requests often meet it.
    fn request_match() -> impl proptest::strategy::Strategy<Value = RequestMatch> {
        use proptest::prelude::*;
        let value = prop_oneof![
            prop::sample::select(vec!["a", "ab", "b"]).prop_map(|v| ValueMatch::Exact(v.into())),
            prop::sample::select(vec!["a", ""]).prop_map(|v| ValueMatch::Prefix(v.into())),
            prop::sample::select(vec!["a+", "b|ab"]).prop_map(|v| ValueMatch::Regex(v.into())),
            any::<bool>().prop_map(ValueMatch::Present),
        ];
        let header =
            (prop::sample::select(vec!["x", "y"]), value).prop_map(|(name, value)| HeaderMatch {
                name: name.into(),
                value,
            });
        let path = prop_oneof![
            prop::sample::select(vec!["/api", "/api/", "/"])
                .prop_map(|p| PathMatch::Prefix(p.into())),
            prop::sample::select(vec!["/api", "/"]).prop_map(|p| PathMatch::Exact(p.into())),
            Just(PathMatch::Regex("/api/.*".into())),
        ];
        (
            prop::collection::vec(header, 0..3),
            prop::option::of(path),
            prop::option::of(prop::sample::select(vec!["GET", "POST"])),
        )
            .prop_map(|(headers, path, method)| RequestMatch {
                headers,
                path,
                method: method.map(Into::into),
            })
    }

    proptest::proptest! {
        #![proptest_config(crate::props::config(1))]

        /// `mismatch` finds a failing condition exactly when `matches` says no.
        #[test]
        fn mismatch_agrees_with_matches(
            m in request_match(),
            method in proptest::sample::select(vec!["GET", "POST"]),
            path in proptest::sample::select(vec!["/", "/api", "/api/x", "/apix", "/b"]),
            sent in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["x", "y", "z"]),
                    proptest::sample::select(vec![&b"a"[..], b"ab", b"b", b"aa", b"", b"\xff"]),
                ),
                0..4,
            ),
        ) {
            let m = CompiledMatch::compile(&m, "m").unwrap();
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            let mut map = http::HeaderMap::new();
            for (name, value) in sent {
                map.append(name, http::HeaderValue::from_bytes(value).unwrap());
            }
            let req = head(&method, path, &map);
            proptest::prop_assert_eq!(m.mismatch(&req).is_none(), m.matches(&req));
        }
    }

    #[test]
    fn a_pattern_that_would_escape_its_anchors_is_refused() {
        // Wrapped in ^(?:…)$ it would compile, and match "a…" or "…b" instead of whole values.
        for escaping in ["a)|(?:b", "x)(y"] {
            let e = whole(escaping).unwrap_err();
            assert!(matches!(e, RegexError::Syntax { .. }), "{escaping}: {e}");
        }
    }

    #[test]
    fn a_regex_error_shows_the_pattern_as_written() {
        assert_eq!(
            whole("a)b").unwrap_err().to_string(),
            r#""a)b" is not a valid regular expression (RE2 syntax): error: unopened group"#
        );
        assert!(matches!(
            whole(r"\w{1000}{1000}"),
            Err(RegexError::TooBig { limit, .. }) if limit > 0
        ));
        let err = CompiledMatch::compile(
            &RequestMatch {
                path: Some(PathMatch::Regex("[z-a]".into())),
                ..Default::default()
            },
            "m",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(r#"m.path.regex: "[z-a]" is not a valid regular expression"#),
            "{err}"
        );
    }
}
