//! What the proxy keeps resident once it runs.
//!
//! At idle most of a sidecar's RSS is not data but its own binary: pages of code and of
//! read-only data (string and Unicode tables, unwind tables) mapped while it started
//! (config parsing, TLS set-up, flag handling). The kernel maps them sixteen at a time
//! around each page touched ("fault-around") when they are in the page cache, as a
//! freshly pulled image is, so about 90% of the 9 MB of code ends up resident though the
//! request path runs in a fraction of it. Once started, the proxy lets those pages go
//! (and asks for no read-ahead): what comes back is what it uses, and its neighbours.
//! Fault-around still maps up to 64 KiB around each page touched on the kernels measured
//! (6.18), so a first mTLS request brings 5–6 MB of code back; an idle proxy that served
//! none holds 1–2 MB.

use std::ffi::c_void;

use rustix::mm::Advice;

/// One read-only mapping of the executable (code or constants): its start and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMapping {
    /// The first byte.
    pub start: usize,
    /// Its length in bytes.
    pub len: usize,
}

/// The mappings of `/proc/self/smaps` text that hold the file `exe`'s code or constants:
/// readable (and executable or not), never writable, private, and with no page of their
/// own (`Anonymous: 0 kB`), so every page is the file's. A page changed after mapping (a
/// relocation, as in the RELRO segment, or a uprobe's or a debugger's breakpoint) is a
/// private copy, counted as anonymous: such a mapping is left alone. Other files (libc)
/// are left alone too: a library unloaded meanwhile could leave its range to other memory.
pub fn read_only_mappings(smaps: &str, exe: &str) -> Vec<FileMapping> {
    let mut found = Vec::new();
    let mut current: Option<FileMapping> = None;
    for line in smaps.lines() {
        if let Some(mapping) = header(line) {
            current = mapping
                .filter(|(perms, path, _)| matches!(*perms, "r-xp" | "r--p") && *path == exe)
                .map(|(_, _, m)| m);
            continue;
        }
        if let (Some(m), Some(rest)) = (current, line.strip_prefix("Anonymous:")) {
            if rest.trim() == "0 kB" {
                found.push(m);
            }
            current = None;
        }
    }
    found
}

/// A mapping's header line (`start-end perms offset device inode path`): `Some(None)` for
/// one without a file path, `None` for a line that is not a header (`Key: value`).
fn header(line: &str) -> Option<Option<(&str, &str, FileMapping)>> {
    let (range, rest) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let mut fields = rest.trim_start().splitn(5, ' ');
    let perms = fields.next().unwrap_or_default();
    // offset, device, inode, then the path, which may hold spaces.
    let path = fields.nth(3).map(str::trim).unwrap_or_default();
    let len = end.saturating_sub(start);
    Some(
        path.starts_with('/')
            .then_some((perms, path, FileMapping { start, len })),
    )
}

/// Lets go of the pages of the proxy's own code and constants mapped so far and maps them
/// one page at a time from now on; returns the bytes this covered.
pub fn release_startup_pages() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut covered = 0;
    for m in read_only_mappings(&smaps, &exe.to_string_lossy()) {
        advise(m, Advice::Random)?;
        advise(m, Advice::LinuxDontNeed)?;
        covered += m.len;
    }
    Ok(covered)
}

#[allow(unsafe_code)]
fn advise(m: FileMapping, advice: Advice) -> std::io::Result<()> {
    // SAFETY: `m` is a whole mapping the kernel listed for this process, of the proxy's
    // own executable (never unloaded), read-only (never writable), with no page of its
    // own: every page equals the file's.
    // MADV_RANDOM only changes how its pages are faulted in; MADV_DONTNEED on such a
    // private, unmodified file mapping drops the page-table entries, and the next access
    // maps the same bytes from the page cache again. No memory is freed that Rust code
    // owns, and nothing read from these pages changes.
    unsafe { rustix::mm::madvise(m.start as *mut c_void, m.len, advice) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_unchanged_read_only_pages_are_released() {
        let smaps = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 08:01 123 /usr/local/bin/braid proxy
Rss:                1304 kB
Anonymous:             0 kB
55d0c0b00000-55d0c1400000 r-xp 00100000 08:01 123 /usr/local/bin/braid proxy
Rss:                7568 kB
Anonymous:             0 kB
55d0c1380000-55d0c1400000 r--p 00980000 08:01 123 /usr/local/bin/braid proxy
Anonymous:           364 kB
55d0c1400000-55d0c1500000 rw-p 00a00000 08:01 123 /usr/local/bin/braid proxy
Anonymous:             0 kB
55d0c1600000-55d0c1700000 r-xp 00b00000 08:01 123 /usr/local/bin/braid proxy
Anonymous:             4 kB
7f1000000000-7f1000180000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        // The first two: the third was relocated (RELRO), the fourth is writable, the
        // fifth has a changed page (a breakpoint), libc is another file, and the vDSO is no file.
        assert_eq!(
            read_only_mappings(smaps, "/usr/local/bin/braid proxy"),
            vec![
                FileMapping {
                    start: 0x55d0c0a00000,
                    len: 0x100000
                },
                FileMapping {
                    start: 0x55d0c0b00000,
                    len: 0x900000
                }
            ]
        );
    }

    #[test]
    fn code_still_runs_after_its_pages_are_released() {
        let covered = release_startup_pages().unwrap();
        assert!(covered > 0);
        // This test's own code and constants and the standard library's were among
        // those pages.
        let sum: u64 = (1..=1000u64).map(|n| n * n).sum();
        assert_eq!(sum, 333_833_500);
        assert_eq!(format!("{sum}"), "333833500");
    }
}
