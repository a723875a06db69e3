//! What the property tests of the proxy's parsers share (the head parser, the chunked
//! decoder, protocol detection and the config decoder each have a `props` module next
//! to their code): how many cases a property runs, and the time limit that makes "it
//! never loops" a failure instead of a hung test run.
//!
//! `make test` runs 256 cases per property (proptest's default); `PROPTEST_CASES` sets
//! another count, as `make fuzz` does. Failures are not written to files: proptest
//! prints the shrunk input, which becomes a unit test next to the code it broke.

use std::time::Duration;

use proptest::test_runner::Config;

/// The config of a property whose case costs about `weight` ordinary ones (a 400 KiB
/// head, a YAML document): it runs that many times fewer cases, at least one.
pub fn config(weight: u32) -> Config {
    let default = Config::default();
    Config {
        cases: (default.cases / weight.max(1)).max(1),
        failure_persistence: None,
        // Shrinking a case that hits the time limit is slow: give up after a minute.
        max_shrink_time: 60_000,
        ..default
    }
}

/// Runs `f` on its own thread and returns what it returns; panics if it takes longer
/// than `limit` (a loop, or work that grows faster than its input) and passes its own
/// panic on, so that proptest shrinks either. The limits are generous for debug builds
/// on a loaded 2-core machine: the inputs are small, and a case takes microseconds.
pub fn terminates<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let out = f();
        // The receiver is gone only when the limit has passed; nothing to tell then.
        let _ = done.send(());
        out
    });
    match finished.recv_timeout(limit) {
        // Finished, or panicked (the sender was dropped): join tells which.
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {limit:?}: a loop, or work superlinear in the input")
        }
    }
}

/// The time limit for one case on an input of a few KiB.
pub const CASE_LIMIT: Duration = Duration::from_secs(5);
