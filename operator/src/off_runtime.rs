//! CPU-heavy work (reading a large directory, compiling, computing statuses) run so it
//! does not hold up the async workers that serve health checks and proxies' streams: at
//! 5,000 services one such step took seconds, longer than a stream's keep-alive.

/// Runs `f` where it does not starve the runtime: on a multi-threaded runtime the current
/// worker hands its other tasks to a fresh thread while `f` runs
/// (`tokio::task::block_in_place`); elsewhere (a single-threaded test runtime, no
/// runtime) it simply runs.
pub fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn other_tasks_go_on_while_it_runs() {
        // One worker: without the hand-off the ticker could not run until `f` returned.
        let ticker = tokio::spawn(async {
            let mut n = 0;
            while n < 5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                n += 1;
            }
        });
        off_runtime(|| {
            let start = std::time::Instant::now();
            while !ticker.is_finished() {
                assert!(start.elapsed() < Duration::from_secs(10), "starved");
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }

    #[tokio::test]
    async fn a_single_threaded_runtime_runs_it_in_place() {
        assert_eq!(off_runtime(|| 7), 7);
    }
}
