//! Network namespaces through the `ip` command, and the sweeper.

use std::process::{Command, Output};

use crate::HarnessError;

/// Every namespace the harness makes starts with this, then the creating process's pid.
pub const PREFIX: &str = "be2e-";

/// Runs a command to completion; a non-zero exit is an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<Output, HarnessError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| HarnessError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command,
            message: format!(
                "exit {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(out)
}

/// `ip <args>`.
pub fn ip(args: &[&str]) -> Result<Output, HarnessError> {
    run("ip", args)
}

/// Checks root and the tools; the error says what is missing and how to get it.
pub fn prerequisites() -> Result<(), HarnessError> {
    let uid = run("id", &["-u"])?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err(HarnessError::Missing(
            "root (network namespaces and iptables need it): run `sudo make e2e`".into(),
        ));
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("iptables-restore", "iptables"),
        ("setpriv", "util-linux"),
        ("tcpdump", "tcpdump"),
        ("openssl", "openssl"),
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Err(HarnessError::Missing(format!(
                "{tool}: install the {package} package"
            )));
        }
    }
    Ok(())
}

/// Removes namespaces (and their processes and hosts files) left by harness runs whose
/// process is gone — e.g. a test run killed before its cleanup ran.
pub fn sweep() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or_default();
        if owner.is_empty() || std::path::Path::new(&format!("/proc/{owner}")).exists() {
            continue; // a live run's namespace
        }
        delete(name);
    }
}

/// Removes this process's own namespaces (and their processes): what an interrupted
/// run does before it exits, since its destructors will not run.
pub fn sweep_own() {
    let me = std::process::id().to_string();
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let owner = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next());
        if owner == Some(me.as_str()) {
            delete(name);
        }
    }
}

/// Kills every process in the namespace and deletes it with its hosts file.
pub fn delete(name: &str) {
    if let Ok(out) = ip(&["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
    }
    let _ = ip(&["netns", "del", name]);
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
}
