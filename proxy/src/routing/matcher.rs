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
