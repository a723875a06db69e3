//! Whether to inject the proxy as a native sidecar: an init container with
//! `restartPolicy: Always`, which Kubernetes runs (on by default) from 1.29. Older API
//! servers would drop the field and hold the pod forever behind a never-ending init
//! container, so by default the injector asks the API server its version at start-up.

use k8s_openapi::apimachinery::pkg::version::Info;

/// The first minor version of Kubernetes 1.x with native sidecars on by default.
pub const FIRST_MINOR: u32 = 29;

/// `--native-sidecars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecars {
    /// Ask the API server: native sidecars from Kubernetes 1.29.
    Auto,
    /// Always (the cluster is 1.29 or newer, or 1.28 with the SidecarContainers gate).
    #[value(name = "true")]
    On,
    /// Never: the proxy is the first container, with postStart and preStop hooks.
    #[value(name = "false")]
    Off,
}

/// A version the injector cannot judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the API server reports version {major:?}.{minor:?}, which braid cannot read; pass --native-sidecars true (Kubernetes 1.29+) or false"
)]
pub struct UnreadableVersion {
    /// `major` as reported.
    pub major: String,
    /// `minor` as reported.
    pub minor: String,
}

/// Why auto-detection failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// No cluster to ask.
    #[error(
        "--native-sidecars auto: no cluster to ask ({0}); run in a cluster or with KUBECONFIG, or pass --native-sidecars true (Kubernetes 1.29+) or false"
    )]
    NoCluster(#[source] kube::Error),
    /// The API server did not answer `/version`.
    #[error(
        "--native-sidecars auto: the API server's /version failed ({0}); pass --native-sidecars true (Kubernetes 1.29+) or false"
    )]
    Version(#[source] kube::Error),
    /// It answered something unreadable.
    #[error("--native-sidecars auto: {0}")]
    Unreadable(#[from] UnreadableVersion),
}

/// Whether a cluster reporting `info` runs native sidecars by default. Managed
/// clusters report minors such as `"29+"`; the digits decide.
pub fn supported(info: &Info) -> Result<bool, UnreadableVersion> {
    let (major, minor) = version(info)?;
    Ok(major > 1 || (major == 1 && minor >= FIRST_MINOR))
}

/// The `(major, minor)` version `info` reports, by the digits each starts with.
pub fn version(info: &Info) -> Result<(u32, u32), UnreadableVersion> {
    let unreadable = || UnreadableVersion {
        major: info.major.clone(),
        minor: info.minor.clone(),
    };
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let major = digits(&info.major).ok_or_else(unreadable)?;
    let minor = digits(&info.minor).ok_or_else(unreadable)?;
    Ok((major, minor))
}

/// Asks the API server behind `client`.
pub async fn detect(client: &kube::Client) -> Result<bool, DetectError> {
    let info = client
        .apiserver_version()
        .await
        .map_err(DetectError::Version)?;
    Ok(supported(&info)?)
}

impl NativeSidecars {
    /// Resolves the setting, asking the cluster (in-cluster config or KUBECONFIG) for
    /// `Auto`.
    pub async fn resolve(self) -> Result<bool, DetectError> {
        match self {
            Self::On => Ok(true),
            Self::Off => Ok(false),
            Self::Auto => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(DetectError::NoCluster)?;
                detect(&client).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            ..Default::default()
        }
    }

    #[test]
    fn from_1_29_on() {
        assert_eq!(supported(&info("1", "28")), Ok(false));
        assert_eq!(supported(&info("1", "29")), Ok(true));
        assert_eq!(supported(&info("1", "32")), Ok(true));
        assert_eq!(supported(&info("2", "0")), Ok(true));
    }

    #[test]
    fn managed_clusters_minor_suffixes() {
        // EKS and GKE report "28+" / "29+".
        assert_eq!(supported(&info("1", "28+")), Ok(false));
        assert_eq!(supported(&info("1", "29+")), Ok(true));
    }

    #[test]
    fn an_unreadable_version_names_the_flag() {
        let err = supported(&info("", "x")).unwrap_err();
        assert!(err.to_string().contains("--native-sidecars"), "{err}");
    }
}
