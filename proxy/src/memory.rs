//! What the proxy keeps resident once it runs.
//!
//! At idle most of a sidecar's RSS is not data but its own machine code: pages of the
//! binary mapped while it started (config parsing, TLS set-up, flag handling). The kernel
//! maps them sixteen at a time around each page touched ("fault-around") when they are in
//! the page cache, as a freshly pulled image is, so about 90% of the 9 MB of code ends up
//! resident though the request path runs in a fraction of it. Once started, the proxy
//! lets those pages go and asks the kernel to map code one page at a time from then on:
//! what stays resident is the code it runs.

use std::ffi::c_void;

use rustix::mm::Advice;

/// One mapping of executable code: its start address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeMapping {
    /// The first byte.
    pub start: usize,
    /// Its length in bytes.
    pub len: usize,
}

/// The mappings of `/proc/self/maps` text that hold code from files: readable and
/// executable, never writable (so never changed from what the file holds), private.
pub fn code_mappings(maps: &str) -> Vec<CodeMapping> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            // offset, device, inode, then the path.
            let path = fields.nth(3)?;
            if perms != "r-xp" || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some(CodeMapping {
                start,
                len: end.checked_sub(start)?,
            })
        })
        .collect()
}

/// Lets go of the code pages mapped so far and maps code one page at a time from now on;
/// returns the bytes of code this covered.
pub fn release_startup_code() -> std::io::Result<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut covered = 0;
    for m in code_mappings(&maps) {
        advise(m, Advice::Random)?;
        advise(m, Advice::LinuxDontNeed)?;
        covered += m.len;
    }
    Ok(covered)
}

#[allow(unsafe_code)]
fn advise(m: CodeMapping, advice: Advice) -> std::io::Result<()> {
    // SAFETY: `m` is a whole mapping the kernel listed for this process, of a file,
    // readable and executable and never writable, so its pages always equal the file's.
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
    fn only_code_from_files_is_released() {
        let maps = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 08:01 123 /usr/local/bin/braid-proxy
55d0c0b00000-55d0c1400000 r-xp 00100000 08:01 123 /usr/local/bin/braid-proxy
55d0c1400000-55d0c1500000 rw-p 00a00000 08:01 123 /usr/local/bin/braid-proxy
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 [heap]
7f1000000000-7f1000180000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
7ffd10000000-7ffd10001000 rwxp 00000000 00:00 0
";
        assert_eq!(
            code_mappings(maps),
            vec![
                CodeMapping {
                    start: 0x55d0c0b00000,
                    len: 0x900000
                },
                CodeMapping {
                    start: 0x7f1000000000,
                    len: 0x180000
                },
            ]
        );
    }

    #[test]
    fn code_still_runs_after_its_pages_are_released() {
        let covered = release_startup_code().unwrap();
        assert!(covered > 0);
        // This test's own code and the standard library's were among those pages.
        let sum: u64 = (1..=1000u64).map(|n| n * n).sum();
        assert_eq!(sum, 333_833_500);
        assert_eq!(format!("{sum}"), "333833500");
    }
}
