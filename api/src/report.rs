//! How every braid binary reports the error it stops on: the message and its causes on
//! one line, each cause once.

use std::error::Error;
use std::process::ExitCode;

/// How a binary's `main` ends: success, or the error printed on one line (see
/// [`message`]) and exit code 1 (without the backtrace anyhow prints under
/// `RUST_BACKTRACE`).
pub fn exit<E: AsRef<dyn Error + 'static>>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", message(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `e` and its causes, joined by `: `; a cause whose text the message already holds
/// (errors that print their source as part of their own message) is not repeated.
pub fn message(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading c.yaml: {0}")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("loading the config")]
    struct Top(#[source] Outer);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = Top(Outer(io));
        assert_eq!(
            message(&e),
            "loading the config: reading c.yaml: entity not found"
        );
    }
}
