//! The path an AccessPolicy judges: what an app's router would make of the request
//! target, so a rule cannot be walked around by spelling the same path another way.
//!
//! Apps and frameworks resolve `.` and `..` segments, merge `//`, decode escapes, and some
//! (Tomcat, Spring) drop `;parameters` from segments: `/public/..;/admin` is `/admin` to
//! them. The policy decides on the path after all of those; the request goes on as sent.
//! Escaped `/` and `\` count as separators: `/admin%2Fusers` is judged as
//! `/admin/users`, the most an app could read it as.

use std::borrow::Cow;

/// The normalized path of the target `raw` (origin-form, absolute-form, or an HTTP/2
/// `:path`), without its query or fragment.
pub fn normalize(raw: &str) -> Cow<'_, str> {
    let path = match raw.strip_prefix('/') {
        Some(_) => raw,
        // Absolute-form: the path after the authority.
        None => match raw.find("://") {
            Some(i) => {
                let rest = &raw[i + 3..];
                rest.find('/').map_or("/", |j| &rest[j..])
            }
            // Authority-form (CONNECT) or `*`: no path to normalize.
            None => return Cow::Borrowed(raw),
        },
    };
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode(path);
    // `/a/` and `/a/.` name a directory; `/a` a file: exact rules tell them apart.
    let last = decoded.rsplit('/').next().unwrap_or_default();
    let last = last.split(';').next().unwrap_or_default();
    let trailing = decoded.ends_with('/') || last == "." || last == "..";
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Whether `path` is already what [`normalize`] would make of it (the usual case: no
/// allocation).
fn is_normal(path: &str) -> bool {
    !path.contains(['%', '\\', ';'])
        && !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..")
        && path.starts_with('/')
}

/// `path` with escapes of unreserved characters, `/` and `\` decoded and `\` read as
/// `/`; other escapes stay (upper-cased), as does anything malformed.
fn decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        let b = (h * 16 + l) as u8;
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            out.push(b);
                        } else if b == b'/' || b == b'\\' {
                            out.push(b'/');
                        } else {
                            out.push(b'%');
                            out.extend(format!("{b:02X}").bytes());
                        }
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'\\' => out.push(b'/'),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_path_is_borrowed_as_is() {
        assert!(matches!(
            normalize("/api/orders/1"),
            Cow::Borrowed("/api/orders/1")
        ));
        assert_eq!(normalize("/api/orders?id=1#x"), "/api/orders");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn every_other_spelling_of_a_path_is_the_path() {
        for (raw, want) in [
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/public/..;/admin", "/admin"),
            ("/admin;jsessionid=1", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%2e%2e/admin", "/admin"),
            ("/public%2F..%2Fadmin", "/admin"),
            ("/public\\..\\admin", "/admin"),
            ("/admin/", "/admin/"),
            ("/admin/.", "/admin/"),
            ("/..", "/"),
            ("/a%20b", "/a%20b"),
            ("/a%zz", "/a%zz"),
            ("http://payments/admin?x", "/admin"),
            ("http://payments", "/"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
        assert_eq!(
            normalize("payments:443"),
            "payments:443",
            "authority-form stays"
        );
    }
}
