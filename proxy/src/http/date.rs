//! The `date` header the proxy adds to answers without one (RFC 9110 §6.6.1: a response
//! forwarded without `Date` gets one), formatted at most once a second per thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

thread_local! {
    /// The second last formatted, and its value.
    static LAST: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// Now, as an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn now() -> Option<HeaderValue> {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((s, value)) if *s == second => Some(value.clone()),
            _ => {
                let value = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok()?;
                *last = Some((second, value.clone()));
                Some(value)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_an_http_date_of_this_second() {
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        let value = now().unwrap();
        let parsed = httpdate::parse_http_date(value.to_str().unwrap()).unwrap();
        assert!(parsed >= before && parsed <= SystemTime::now(), "{value:?}");
        assert!(value.to_str().unwrap().ends_with(" GMT"));
    }
}
