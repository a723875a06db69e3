//! The generated capture rules, compared with reviewed golden files under
//! `tests/golden/`. After an intended change, regenerate with
//! `BRAID_UPDATE_GOLDEN=1 cargo test -p braid-proxy --test iptables_golden` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_proxy::iptables::{CaptureArgs, CaptureSpec, Family, render};
use clap::Parser;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: CaptureArgs,
}

fn check(name: &str, flags: &[&str], family: Family) {
    let mut argv = vec!["braid-proxy-iptables"];
    argv.extend(flags);
    let spec = CaptureSpec::from_args(&Flags::parse_from(argv).args).unwrap();
    let rules = render(&spec, family);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("BRAID_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rules).unwrap();
    }
    let golden =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing {}", path.display()));
    assert_eq!(
        rules, golden,
        "{name} changed; if intended, regenerate (see the module docs)"
    );
}

#[test]
fn defaults_v4() {
    check("defaults.v4.rules", &[], Family::V4);
}

#[test]
fn defaults_v6() {
    check("defaults.v6.rules", &[], Family::V6);
}

#[test]
fn exclusions_v4() {
    check(
        "exclusions.v4.rules",
        &[
            "--exclude-inbound-ports",
            "9090,8081",
            "--exclude-outbound-ports",
            "5432",
            "--exclude-outbound-cidrs",
            "169.254.169.254/32,fd00::/8",
        ],
        Family::V4,
    );
}

#[test]
fn include_only_v6() {
    check(
        "include-only.v6.rules",
        &[
            "--include-outbound-cidrs",
            "10.96.0.0/12,fd00:10:96::/112",
            "--proxy-uid",
            "2000",
            "--proxy-gid",
            "2001",
        ],
        Family::V6,
    );
}
