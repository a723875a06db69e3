//! The request head an AccessPolicy judges: as an app's router reads it, so a rule cannot
//! be walked around by spelling the request another way — the normalized path
//! ([`normalize`]) and the method in upper case (routers match methods
//! case-insensitively).

use std::borrow::Cow;

use super::normalize;
use crate::routing::RequestHead;

/// A request's method and path as AccessPolicies judge them.
#[derive(Clone, Debug)]
pub struct Judged<'a> {
    method: Cow<'a, http::Method>,
    path: Cow<'a, str>,
}

impl<'a> Judged<'a> {
    /// `method` and `path` (the request target, or its path) as judged. Borrowed when
    /// they are already in that form (the usual case: no allocation).
    pub fn of(method: &'a http::Method, path: &'a str) -> Self {
        let method = match method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            true => Cow::Owned(
                http::Method::from_bytes(method.as_str().to_ascii_uppercase().as_bytes())
                    .unwrap_or_else(|_| method.clone()),
            ),
            false => Cow::Borrowed(method),
        };
        Self {
            method,
            path: normalize(path),
        }
    }

    /// The head to decide on, with `headers`.
    pub fn head<'b>(&'b self, headers: &'b http::HeaderMap) -> RequestHead<'b> {
        RequestHead {
            method: &self.method,
            path: &self.path,
            headers,
        }
    }

    /// The method as judged.
    pub fn method(&self) -> &http::Method {
        &self.method
    }

    /// The path as judged.
    pub fn path(&self) -> &str {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_is_upper_cased_and_the_path_normalized() {
        let get = http::Method::from_bytes(b"get").unwrap();
        let j = Judged::of(&get, "/public/../admin?x=1");
        assert_eq!((j.method().as_str(), j.path()), ("GET", "/admin"));
        let j = Judged::of(&http::Method::POST, "/api");
        assert!(matches!(
            (&j.method, &j.path),
            (Cow::Borrowed(_), Cow::Borrowed(_))
        ));
    }
}
