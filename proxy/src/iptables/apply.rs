//! Installing and removing the rules.

use std::io::Write;
use std::process::{Command, Stdio};

use super::backend::{Backend, choose};
use super::rules::{CHAINS, render_cleanup};
use super::{CaptureArgs, CaptureError, CaptureSpec, Family, render};

/// Runs `braid-proxy iptables`: prints (dry run), removes (cleanup) or installs the rules
/// for IPv4 and, when the pod has IPv6, IPv6. Installing twice leaves one copy.
pub fn run(args: &CaptureArgs) -> Result<(), CaptureError> {
    let spec = CaptureSpec::from_args(args)?;
    let families = families();
    if args.dry_run {
        for family in families {
            println!("# {family:?}\n{}", render(&spec, family));
        }
        return Ok(());
    }
    let (backend, why) = choose(args.backend)?;
    println!(
        "braid-proxy iptables: using the {} backend ({why})",
        backend.name()
    );
    for family in families {
        remove(backend, family)?;
        if !args.cleanup {
            restore(backend, family, &render(&spec, family))?;
        }
    }
    println!(
        "braid-proxy iptables: {}",
        if args.cleanup {
            "capture rules removed"
        } else {
            "capture rules installed"
        }
    );
    Ok(())
}

/// IPv4 always; IPv6 when the kernel has it in this network namespace.
fn families() -> Vec<Family> {
    let mut f = vec![Family::V4];
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        f.push(Family::V6);
    }
    f
}

fn tables_cmd(backend: Backend, family: Family) -> String {
    // `iptables-nft` / `iptables-legacy` (or plain `iptables`) for single-rule edits.
    let restore = backend.binary(family, "restore");
    restore.trim_end_matches("-restore").to_owned()
}

/// Deletes the jumps into braid's chains and the chains themselves, if present.
fn remove(backend: Backend, family: Family) -> Result<(), CaptureError> {
    let cmd = tables_cmd(backend, family);
    for (parent, chain) in [("PREROUTING", "BRAID_INBOUND"), ("OUTPUT", "BRAID_OUTPUT")] {
        // Delete every copy; the command fails once none is left.
        for _ in 0..16 {
            let deleted = Command::new(&cmd)
                .args(["-w", "-t", "nat", "-D", parent, "-p", "tcp", "-j", chain])
                .stderr(Stdio::null())
                .status()
                .map_err(|e| CaptureError::NoIptables(format!("{cmd}: {e}")))?;
            if !deleted.success() {
                break;
            }
        }
    }
    let listing = Command::new(&cmd)
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map_err(|e| CaptureError::NoIptables(format!("{cmd}: {e}")))?;
    let text = String::from_utf8_lossy(&listing.stdout);
    if CHAINS.iter().any(|c| text.contains(&format!("-N {c}"))) {
        restore(backend, family, &render_cleanup())?;
    }
    Ok(())
}

fn restore(backend: Backend, family: Family, input: &str) -> Result<(), CaptureError> {
    let binary = backend.binary(family, "restore");
    let command = format!("{binary} --noflush");
    let mut child = Command::new(&binary)
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CaptureError::NoIptables(format!("{binary}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| CaptureError::Command {
                command: command.clone(),
                message: e.to_string(),
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CaptureError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(CaptureError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
