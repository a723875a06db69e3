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

/// Deletes the jumps into braid's chains and the chains themselves, if present. "Not
/// there" is success; any other failure (no NET_ADMIN, a broken backend) is an error.
fn remove(backend: Backend, family: Family) -> Result<(), CaptureError> {
    let cmd = tables_cmd(backend, family)?;
    let run = |args: &[&str]| {
        Command::new(&cmd)
            .args(args)
            .output()
            .map_err(|e| CaptureError::NoIptables(format!("{cmd}: {e}")))
    };
    for (parent, chain) in [("PREROUTING", "BRAID_INBOUND"), ("OUTPUT", "BRAID_OUTPUT")] {
        // Delete every copy, until iptables says none is left.
        loop {
            let out = run(&["-w", "-t", "nat", "-D", parent, "-p", "tcp", "-j", chain])?;
            if out.status.success() {
                continue;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            if is_not_found(&stderr) {
                break;
            }
            return Err(CaptureError::Command {
                command: format!("{cmd} -t nat -D {parent} -p tcp -j {chain}"),
                message: stderr.trim().to_owned(),
            });
        }
    }
    let listing = run(&["-w", "-t", "nat", "-S"])?;
    if !listing.status.success() {
        return Err(CaptureError::Command {
            command: format!("{cmd} -t nat -S"),
            message: String::from_utf8_lossy(&listing.stderr).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&listing.stdout);
    if CHAINS.iter().any(|c| text.contains(&format!("-N {c}"))) {
        restore(backend, family, &render_cleanup())?;
    }
    Ok(())
}

/// iptables' ways of saying the rule or chain to delete is not there.
fn is_not_found(stderr: &str) -> bool {
    [
        "does a matching rule exist",
        "No chain/target/match",
        "Bad rule",
        "doesn't exist",
        "does not exist",
    ]
    .iter()
    .any(|s| stderr.contains(s))
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
