//! Worker threads: by default the container's CPU limit, so a sidecar limited to one CPU
//! does not run (and context-switch) one thread per host core.

/// Worker threads for a container: `ceil(quota / period)` from cgroup v2 `cpu.max`, or
/// cgroup v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`; else the available parallelism.
pub fn default_workers() -> usize {
    let fallback = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cgroup_cpu_limit().map_or(fallback, |limit| limit.min(fallback).max(1))
}

fn cgroup_cpu_limit() -> Option<usize> {
    if let Ok(text) = std::fs::read_to_string("/sys/fs/cgroup/cpu.max") {
        return parse_cpu_max(&text);
    }
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").ok()?;
    let period = std::fs::read_to_string("/sys/fs/cgroup/cpu/cpu.cfs_period_us").ok()?;
    ceil_ratio(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

/// Parses cgroup v2 `cpu.max` ("max 100000" or "150000 100000").
pub fn parse_cpu_max(text: &str) -> Option<usize> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period: i64 = parts.next()?.parse().ok()?;
    ceil_ratio(quota.parse().ok()?, period)
}

fn ceil_ratio(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    usize::try_from((quota + period - 1) / period).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cgroup_limits() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
    }
}
