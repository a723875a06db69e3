//! Durations as Kubernetes and Go users write them: `10s`, `500ms`, `1m30s`, `2h`.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not a duration: write a number with a unit, e.g. 500ms, 10s, 1m30s ({why})")]
pub struct DurationError {
    value: String,
    why: String,
}

/// Reads `s` (`500ms`, `10s`, `1m30s`, `2h`); a bare number, a negative or a zero
/// duration is refused: a zero timeout would close every connection at once.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let refuse = |why: &str| DurationError {
        value: s.to_owned(),
        why: why.to_owned(),
    };
    let trimmed = s.trim();
    if trimmed.chars().all(|c| c.is_ascii_digit()) && !trimmed.is_empty() {
        return Err(refuse("the unit is missing"));
    }
    let d = humantime::parse_duration(trimmed).map_err(|e| refuse(&e.to_string()))?;
    if d.is_zero() {
        return Err(refuse("it must be longer than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_style_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "10", "0s", "ten seconds", "-5s", "5 parsecs"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains("e.g. 500ms"), "{e}");
        }
        assert!(
            parse_duration("10")
                .unwrap_err()
                .to_string()
                .contains("unit is missing")
        );
    }
}
