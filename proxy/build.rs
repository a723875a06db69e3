//! Lays out the proxy's executable with the code a running proxy uses packed together
//! (`link/hot-symbols.txt`, written by `scripts/hot-symbols`), so the pages of code it
//! keeps resident hold that code rather than start-up code around it (see
//! `src/memory.rs`). Only where rustc links with lld, which reads the ordering: the
//! x86_64 Linux GNU target from Rust 1.90 on, with no linker of the user's choosing.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-symbols.txt");
    println!("cargo:rerun-if-env-changed=BRAID_NO_SYMBOL_ORDERING");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let own_linker =
        flags.contains("linker") || std::env::var_os("BRAID_NO_SYMBOL_ORDERING").is_some();
    if target != "x86_64-unknown-linux-gnu" || own_linker || !rustc_links_with_lld() {
        return;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = format!("{dir}/link/hot-symbols.txt");
    println!("cargo:rustc-link-arg-bin=braid-proxy=-Wl,--symbol-ordering-file={order}");
    // Names no longer in the build (code changed since the list was written) are skipped.
    println!("cargo:rustc-link-arg-bin=braid-proxy=-Wl,--no-warn-symbol-ordering");
}

/// Whether the compiler is Rust 1.90 or later, which links this target with its own lld.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (…)"
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
