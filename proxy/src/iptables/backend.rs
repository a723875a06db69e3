//! Which iptables the host uses: nft or legacy. Rules installed in the other would be
//! ignored (or fight the host's), a classic cause of pods running uncaptured.

use std::process::Command;

use super::{BackendChoice, CaptureError, Family};

/// An iptables implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// iptables-nft (the nf_tables kernel API).
    Nft,
    /// iptables-legacy (the x_tables kernel API).
    Legacy,
}

impl Backend {
    /// The binary for `tool` (`restore`, `save`) in `family`, preferring the explicit
    /// `-nft`/`-legacy` names and falling back to the plain one when it is that backend.
    pub fn binary(self, family: Family, tool: &str) -> Result<String, CaptureError> {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let explicit = format!("{base}-{}-{tool}", self.name());
        if which(&explicit) {
            return Ok(explicit);
        }
        // The plain binary only if it is this backend: `iptables --version` says
        // "(nf_tables)" or "(legacy)".
        let plain = format!("{base}-{tool}");
        let says = Command::new(base)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let is_this = match self {
            Self::Nft => says.contains("nf_tables"),
            Self::Legacy => says.contains("legacy"),
        };
        if which(&plain) && is_this {
            Ok(plain)
        } else {
            Err(CaptureError::NoIptables(format!(
                "neither {explicit} nor a {name} {plain} is installed: install iptables with the \
                 {name} backend, or choose the other one with --backend",
                name = self.name()
            )))
        }
    }

    /// The name users know.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nft => "nft",
            Self::Legacy => "legacy",
        }
    }
}

fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

/// Rule lines (`-A ...`) the backend holds now; `None` when it cannot be asked.
fn rule_count(binary: &str) -> Option<usize> {
    let out = Command::new(binary).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count(),
    )
}

/// Picks the backend: the requested one, or the one holding more of the host's rules;
/// with none anywhere, what plain `iptables` is.
pub fn choose(choice: BackendChoice) -> Result<(Backend, String), CaptureError> {
    match choice {
        BackendChoice::Nft => return Ok((Backend::Nft, "requested with --backend nft".into())),
        BackendChoice::Legacy => {
            return Ok((Backend::Legacy, "requested with --backend legacy".into()));
        }
        BackendChoice::Auto => {}
    }
    let nft = rule_count("iptables-nft-save");
    let legacy = rule_count("iptables-legacy-save");
    match (nft, legacy) {
        (Some(n), Some(l)) if l > n => {
            Ok((Backend::Legacy, format!("legacy holds {l} rules, nft {n}")))
        }
        (Some(n), Some(l)) if n > l => {
            Ok((Backend::Nft, format!("nft holds {n} rules, legacy {l}")))
        }
        (Some(_), None) => Ok((Backend::Nft, "only iptables-nft is installed".into())),
        (None, Some(_)) => Ok((Backend::Legacy, "only iptables-legacy is installed".into())),
        _ => {
            let out = Command::new("iptables")
                .arg("--version")
                .output()
                .map_err(|e| CaptureError::NoIptables(e.to_string()))?;
            let version = String::from_utf8_lossy(&out.stdout).into_owned();
            let backend = if version.contains("legacy") {
                Backend::Legacy
            } else {
                Backend::Nft
            };
            Ok((
                backend,
                format!("no rules anywhere yet; iptables is {}", version.trim()),
            ))
        }
    }
}
