//! Durations as users write them: `500ms`, `2s`, `5m`, `1h30m`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The pattern the API server enforces on every duration field. Units are limited to
/// the ones a mesh operator needs; a bare number is refused so `timeout: 2` cannot be
/// mistaken for seconds or milliseconds.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(ms|s|m|h))+$";

/// The longest duration string accepted (keeps CEL and storage bounded).
pub const DURATION_MAX_LENGTH: u32 = 32;

/// A duration exactly as the user wrote it (so YAML → type → YAML is lossless), parsed on
/// demand. Deserialising never fails on the text: a malformed value is reported by
/// `validate()` with its field path instead of aborting the whole resource.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(String);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration: write a whole number with a unit, e.g. 500ms, 2s, 5m, 1h30m")]
pub struct DurationError {
    /// The refused text.
    pub text: String,
}

impl Duration {
    /// Wraps a duration string without checking it; [`Duration::parse`] checks.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the text into a [`std::time::Duration`].
    pub fn parse(&self) -> Result<std::time::Duration, DurationError> {
        let err = || DurationError {
            text: self.0.clone(),
        };
        if self.0.is_empty() || self.0.len() > DURATION_MAX_LENGTH as usize {
            return Err(err());
        }
        // Only the units of DURATION_PATTERN, with no spaces or fractions, so what the
        // API server accepts and what braid parses are the same set.
        let mut rest = self.0.as_str();
        let mut total = std::time::Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 6 {
                return Err(err());
            }
            let (number, tail) = rest.split_at(digits);
            let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
            let (unit, tail) = tail.split_at(unit_len);
            let number: u64 = number.parse().map_err(|_| err())?;
            let piece = match unit {
                "ms" => std::time::Duration::from_millis(number),
                "s" => std::time::Duration::from_secs(number),
                "m" => std::time::Duration::from_secs(number * 60),
                "h" => std::time::Duration::from_secs(number * 3600),
                _ => return Err(err()),
            };
            total = total.checked_add(piece).ok_or_else(err)?;
            rest = tail;
        }
        Ok(total)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
            // Every braid duration is a timeout, interval or wait: zero is always a mistake.
            "x-kubernetes-validations": [{
                "rule": "duration(self) > duration('0s')",
                "message": "must be longer than zero, e.g. 500ms or 1s",
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_the_units_users_write() {
        assert_eq!(Duration::new("500ms").parse(), Ok(Std::from_millis(500)));
        assert_eq!(Duration::new("2s").parse(), Ok(Std::from_secs(2)));
        assert_eq!(Duration::new("5m").parse(), Ok(Std::from_secs(300)));
        assert_eq!(Duration::new("1h30m").parse(), Ok(Std::from_secs(5400)));
        assert_eq!(
            Duration::new("1m500ms").parse(),
            Ok(Std::from_millis(60_500))
        );
    }

    #[test]
    fn refuses_what_the_schema_pattern_refuses() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for bad in [
            "", "2", "2x", "1.5s", "2 s", "-1s", "1d", "s", "ms5", "2us", "1234567s",
        ] {
            assert!(Duration::new(bad).parse().is_err(), "{bad:?} parsed");
            assert!(!pattern.is_match(bad), "{bad:?} matched the schema pattern");
        }
        for good in ["0s", "500ms", "1h30m", "999999ms"] {
            assert!(Duration::new(good).parse().is_ok(), "{good:?} refused");
            assert!(
                pattern.is_match(good),
                "{good:?} not matched by the schema pattern"
            );
        }
    }

    #[test]
    fn the_error_names_the_text_and_the_fix() {
        let msg = Duration::new("2x").parse().unwrap_err().to_string();
        assert!(msg.contains("\"2x\"") && msg.contains("500ms"), "{msg}");
    }
}
