//! The capture rules, as `iptables-restore` input. Pure: golden-file tested.
//!
//! nat table, chains of braid's own:
//! - `PREROUTING` → `BRAID_INBOUND`: every TCP connection to the pod is redirected to the
//!   inbound listener, except the proxy's own ports and excluded ports.
//! - `OUTPUT` → `BRAID_OUTPUT`: connections from the app are redirected to the outbound
//!   listener, except the proxy's (by UID/GID — its upstream traffic must not loop),
//!   loopback, and excluded ports/CIDRs. The proxy's connections to the app come from
//!   the dedicated source (127.0.0.6) and pass. A connection to the pod's own IP over
//!   `lo` goes to inbound capture, as if it came from outside.

use std::fmt::Write;
use std::net::IpAddr;

use super::{CaptureArgs, CaptureError, PROXY_PORTS};

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Checked flags: everything `render` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    /// Proxy UID.
    pub proxy_uid: u32,
    /// Proxy GID.
    pub proxy_gid: u32,
    /// Inbound listener port.
    pub inbound_port: u16,
    /// Outbound listener port.
    pub outbound_port: u16,
    /// The proxy's source towards the app.
    pub inbound_source: IpAddr,
    /// Uncaptured inbound ports.
    pub exclude_inbound_ports: Vec<u16>,
    /// Uncaptured outbound ports.
    pub exclude_outbound_ports: Vec<u16>,
    /// Uncaptured outbound CIDRs.
    pub exclude_outbound_cidrs: Vec<(IpAddr, u8)>,
    /// Captured outbound CIDRs (empty: all).
    pub include_outbound_cidrs: Vec<(IpAddr, u8)>,
}

fn parse_cidr(flag: &'static str, text: &str) -> Result<(IpAddr, u8), CaptureError> {
    let bad = |why: &str| CaptureError::BadFlag {
        flag,
        message: format!("{text:?} is not a CIDR ({why}); write e.g. 10.0.0.0/8 or fd00::/8"),
    };
    let (ip, len) = text.trim().split_once('/').unwrap_or((text.trim(), ""));
    let ip: IpAddr = ip.parse().map_err(|_| bad("bad address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = if len.is_empty() {
        max
    } else {
        len.parse().map_err(|_| bad("bad prefix length"))?
    };
    if len > max {
        return Err(bad("prefix length too long"));
    }
    Ok((ip, len))
}

impl CaptureSpec {
    /// Checks the flags; a bad one is named with its fix.
    pub fn from_args(args: &CaptureArgs) -> Result<Self, CaptureError> {
        let cidrs = |flag, list: &[String]| -> Result<Vec<(IpAddr, u8)>, CaptureError> {
            list.iter()
                .filter(|c| !c.trim().is_empty())
                .map(|c| parse_cidr(flag, c))
                .collect()
        };
        if args.inbound_port == args.outbound_port {
            return Err(CaptureError::BadFlag {
                flag: "--inbound-port",
                message: format!(
                    "{} is also the outbound port; use two different ports",
                    args.inbound_port
                ),
            });
        }
        if args.proxy_uid == 0 {
            return Err(CaptureError::BadFlag {
                flag: "--proxy-uid",
                message: "0 would exempt every root process from capture; run the proxy as its own UID (1337)".into(),
            });
        }
        Ok(Self {
            proxy_uid: args.proxy_uid,
            proxy_gid: args.proxy_gid,
            inbound_port: args.inbound_port,
            outbound_port: args.outbound_port,
            inbound_source: args.inbound_source,
            exclude_inbound_ports: args.exclude_inbound_ports.clone(),
            exclude_outbound_ports: args.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: cidrs(
                "--exclude-outbound-cidrs",
                &args.exclude_outbound_cidrs,
            )?,
            include_outbound_cidrs: cidrs(
                "--include-outbound-cidrs",
                &args.include_outbound_cidrs,
            )?,
        })
    }
}

/// braid's chains, in the order they are declared.
pub const CHAINS: [&str; 4] = [
    "BRAID_INBOUND",
    "BRAID_IN_REDIRECT",
    "BRAID_OUTPUT",
    "BRAID_REDIRECT",
];

/// The `iptables-restore --noflush` input installing the capture for `family`.
pub fn render(spec: &CaptureSpec, family: Family) -> String {
    let (loopback, host_len) = match family {
        Family::V4 => ("127.0.0.0/8", 32),
        Family::V6 => ("::1/128", 128),
    };
    let same_family = |ip: &IpAddr| ip.is_ipv4() == (family == Family::V4);
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("*nat".into());
    for chain in CHAINS {
        line(format!(":{chain} - [0:0]"));
    }
    line("-A PREROUTING -p tcp -j BRAID_INBOUND".into());
    line("-A OUTPUT -p tcp -j BRAID_OUTPUT".into());

    // Inbound.
    let mut skip_in: Vec<u16> = PROXY_PORTS.to_vec();
    skip_in.extend(&spec.exclude_inbound_ports);
    skip_in.sort_unstable();
    skip_in.dedup();
    for port in &skip_in {
        line(format!("-A BRAID_INBOUND -p tcp --dport {port} -j RETURN"));
    }
    line("-A BRAID_INBOUND -p tcp -j BRAID_IN_REDIRECT".into());
    line(format!(
        "-A BRAID_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        spec.inbound_port
    ));

    // Outbound.
    if same_family(&spec.inbound_source) {
        line(format!(
            "-A BRAID_OUTPUT -s {}/{host_len} -o lo -j RETURN",
            spec.inbound_source
        ));
    }
    // Pod-local traffic to the pod's own IP is inbound traffic, with the same exemptions.
    for port in &skip_in {
        line(format!(
            "-A BRAID_OUTPUT -o lo -p tcp --dport {port} -j RETURN"
        ));
    }
    line(format!(
        "-A BRAID_OUTPUT -o lo ! -d {loopback} -j BRAID_IN_REDIRECT"
    ));
    line(format!(
        "-A BRAID_OUTPUT -m owner --uid-owner {} -j RETURN",
        spec.proxy_uid
    ));
    line(format!(
        "-A BRAID_OUTPUT -m owner --gid-owner {} -j RETURN",
        spec.proxy_gid
    ));
    line(format!("-A BRAID_OUTPUT -d {loopback} -j RETURN"));
    let mut skip_out = spec.exclude_outbound_ports.clone();
    skip_out.sort_unstable();
    skip_out.dedup();
    for port in skip_out {
        line(format!("-A BRAID_OUTPUT -p tcp --dport {port} -j RETURN"));
    }
    for (ip, len) in spec
        .exclude_outbound_cidrs
        .iter()
        .filter(|(ip, _)| same_family(ip))
    {
        line(format!("-A BRAID_OUTPUT -d {ip}/{len} -j RETURN"));
    }
    if spec.include_outbound_cidrs.is_empty() {
        line("-A BRAID_OUTPUT -j BRAID_REDIRECT".into());
    } else {
        for (ip, len) in spec
            .include_outbound_cidrs
            .iter()
            .filter(|(ip, _)| same_family(ip))
        {
            line(format!("-A BRAID_OUTPUT -d {ip}/{len} -j BRAID_REDIRECT"));
        }
    }
    line(format!(
        "-A BRAID_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        spec.outbound_port
    ));
    line("COMMIT".into());
    out
}

/// The `iptables-restore --noflush` input removing braid's chains (after the jumps to
/// them are deleted).
pub fn render_cleanup() -> String {
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in CHAINS {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: CaptureArgs,
    }

    fn spec(flags: &[&str]) -> Result<CaptureSpec, CaptureError> {
        let mut argv = vec!["t"];
        argv.extend(flags);
        CaptureSpec::from_args(&T::parse_from(argv).args)
    }

    #[test]
    fn bad_flags_are_named() {
        let e = spec(&["--exclude-outbound-cidrs", "10.0.0.0/40"])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--exclude-outbound-cidrs:") && e.contains("10.0.0.0/40"),
            "{e}"
        );
        let e = spec(&["--inbound-port", "15001"]).unwrap_err().to_string();
        assert!(e.starts_with("--inbound-port:"), "{e}");
        let e = spec(&["--proxy-uid", "0"]).unwrap_err().to_string();
        assert!(e.starts_with("--proxy-uid:"), "{e}");
    }

    #[test]
    fn the_proxy_and_its_ports_are_never_captured() {
        let rules = render(&spec(&[]).unwrap(), Family::V4);
        for port in PROXY_PORTS {
            assert!(rules.contains(&format!("-A BRAID_INBOUND -p tcp --dport {port} -j RETURN")));
        }
        let uid = rules.find("--uid-owner 1337 -j RETURN").unwrap();
        let redirect = rules.find("-A BRAID_OUTPUT -j BRAID_REDIRECT").unwrap();
        assert!(
            uid < redirect,
            "the proxy's own traffic must be exempted before the redirect"
        );
    }
}
