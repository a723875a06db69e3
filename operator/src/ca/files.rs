//! Directory mode's CA: the CA Secret's three keys (`tls.crt`, `tls.key`, `ca.crt`) as
//! files in a directory every replica shares, created with a new root when absent, so
//! the proxies of every replica trust one another and the replicas each other.
//!
//! A new root is written into a directory of its own, then renamed into place: of
//! replicas starting together one root wins, and the others load it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::authority::Ca;
use super::material::{
    CaMaterial, SIGNING_CERT_KEY, SIGNING_KEY_KEY, TRUST_BUNDLE_KEY, TrustBundle,
};
use super::secret::Origin;

/// The CA files could not be read, written or used.
#[derive(Debug, thiserror::Error)]
#[error("the CA in {dir}: {message}")]
pub struct CaFilesError {
    /// The directory.
    pub dir: String,
    /// What is wrong, and what to do.
    pub message: String,
}

/// Loads the CA in `dir`, or makes a new root there when it has none.
pub fn load_or_create(dir: &Path, now: SystemTime) -> Result<(Ca, Origin), CaFilesError> {
    let err = |message: String| CaFilesError {
        dir: dir.display().to_string(),
        message,
    };
    if !dir.join(SIGNING_CERT_KEY).exists() {
        let ca = Ca::generate_root(now).map_err(|e| err(format!("making a root: {e}")))?;
        match place(dir, ca.material()) {
            Ok(true) => return Ok((ca, Origin::Created)),
            Ok(false) => {} // another replica placed one first
            Err(e) => return Err(err(format!("writing it: {e}"))),
        }
    }
    let text = |key: &str| {
        std::fs::read_to_string(dir.join(key)).map_err(|e| err(format!("reading {key}: {e}")))
    };
    let material = CaMaterial {
        signing_chain_pem: text(SIGNING_CERT_KEY)?,
        signing_key_pem: text(SIGNING_KEY_KEY)?,
        trust_bundle: TrustBundle::parse(&text(TRUST_BUNDLE_KEY)?)
            .map_err(|e| err(e.to_string()))?,
    };
    let ca = Ca::from_material(material, now).map_err(|e| {
        err(format!(
            "{e}; fix the files, or remove the directory for a new root (every proxy then needs a new certificate)"
        ))
    })?;
    Ok((ca, Origin::Existing))
}

/// Writes `material` as `dir`, unless `dir` exists by then (`false`).
fn place(dir: &Path, material: &CaMaterial) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp: PathBuf = parent.join(format!(
        ".ca-new-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    std::fs::create_dir_all(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
    for (key, text, mode) in [
        (SIGNING_CERT_KEY, &material.signing_chain_pem, 0o644),
        (SIGNING_KEY_KEY, &material.signing_key_pem, 0o600),
        (
            TRUST_BUNDLE_KEY,
            &material.trust_bundle.pem().to_string(),
            0o644,
        ),
    ] {
        let path = tmp.join(key);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    // rename(2) onto an existing non-empty directory fails: the first replica wins.
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(true),
        Err(_) if dir.join(SIGNING_CERT_KEY).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(false)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_made_once_and_loaded_after() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("ca");
        let now = SystemTime::now();
        let (made, origin) = load_or_create(&dir, now).unwrap();
        assert_eq!(origin, Origin::Created);
        let (loaded, origin) = load_or_create(&dir, now).unwrap();
        assert_eq!(origin, Origin::Existing);
        assert_eq!(made.trust_bundle().pem(), loaded.trust_bundle().pem());
        // A replica that lost the race loads the winner's root.
        assert!(!place(&dir, Ca::generate_root(now).unwrap().material()).unwrap());
        let (again, _) = load_or_create(&dir, now).unwrap();
        assert_eq!(again.trust_bundle().pem(), made.trust_bundle().pem());
        std::fs::write(dir.join(SIGNING_KEY_KEY), "not a key").unwrap();
        let e = load_or_create(&dir, now).unwrap_err();
        assert!(e.to_string().contains("tls.key"), "{e}");
    }
}
