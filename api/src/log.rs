//! Log filters as the proxy takes them (`--log-level`, `POST /logging`) and the injector
//! checks them (`braid.dev/log-level`), by one rule.

/// A log filter the proxy would not take, and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LogFilterError(String);

/// The levels a log filter may name.
pub const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter (`--log-level`, `POST /logging?level=`): a plain level, or
/// comma-separated `target=level` directives (a target is a Rust module path such as
/// `braid_proxy::http`) with at most one plain level among them. tracing's `EnvFilter`
/// alone would take a typo like `loud` as a target name with no level and log nothing,
/// so only this subset is let through. Returns the filter as given.
pub fn parse_log_filter(filter: &str) -> Result<String, LogFilterError> {
    let accepted = || {
        format!(
            "accepted: one of {} or target=level directives, comma-separated (e.g. warn,braid_proxy=debug)",
            LOG_LEVELS.join(", ")
        )
    };
    let is_level = |s: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s));
    let is_target = |s: &str| {
        !s.is_empty()
            && s.split("::").all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
    };
    let mut plain = 0;
    for directive in filter.split(',') {
        let directive = directive.trim();
        let ok = match directive.split_once('=') {
            Some((target, level)) => is_target(target) && is_level(level),
            None if is_level(directive) => {
                plain += 1;
                true
            }
            None => false,
        };
        if !ok {
            return Err(LogFilterError(format!(
                "{directive:?} is not a log level; {}",
                accepted()
            )));
        }
    }
    if plain > 1 {
        return Err(LogFilterError(format!(
            "more than one plain level; {}",
            accepted()
        )));
    }
    Ok(filter.to_owned())
}
