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

fn tables_cmd(backend: Backend, family: Family) -> Result<String, CaptureError> {
    // `iptables-nft` / `iptables-legacy` (or plain `iptables`) for single-rule edits.
    let restore = backend.binary(family, "restore")?;
    Ok(restore.trim_end_matches("-restore").to_owned())
}

/// Deletes the jumps into braid's chains (as many copies as are listed) and the chains
/// themselves, if present. Any failure (no NET_ADMIN, no nat table) is an error.
fn remove(backend: Backend, family: Family) -> Result<(), CaptureError> {
    let cmd = tables_cmd(backend, family)?;
    let run = |args: &[&str]| -> Result<String, CaptureError> {
        let out = Command::new(&cmd)
            .args(args)
            .output()
            .map_err(|e| CaptureError::NoIptables(format!("{cmd}: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(CaptureError::Command {
                command: format!("{cmd} {}", args.join(" ")),
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    };
    let listing = run(&["-w", "-t", "nat", "-S"])?;
    for (parent, chain) in [("PREROUTING", "BRAID_INBOUND"), ("OUTPUT", "BRAID_OUTPUT")] {
        let jump = format!("-A {parent} -p tcp -j {chain}");
        let copies = listing.lines().filter(|l| l.trim() == jump).count();
        for _ in 0..copies {
            run(&["-w", "-t", "nat", "-D", parent, "-p", "tcp", "-j", chain])?;
        }
    }
    if CHAINS
        .iter()
        .any(|c| listing.lines().any(|l| l.trim() == format!("-N {c}")))
    {
        restore(backend, family, &render_cleanup())?;
    }
    Ok(())
}

fn restore(backend: Backend, family: Family, input: &str) -> Result<(), CaptureError> {
    let binary = backend.binary(family, "restore")?;
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
