//! Installing a new proxy binary only if it is the one expected: it is copied into the
//! supervisor's own directory and hashed as it is copied, so what runs is exactly what
//! was checked (a file changed after the check is never run).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why a binary was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// It could not be read or copied.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Its digest is not the one expected (tampered with, or another build).
    #[error(
        "{path} has SHA-256 {got}, not the {expected} expected: not installed, the running proxy keeps serving"
    )]
    Mismatch {
        /// The binary.
        path: PathBuf,
        /// Its digest.
        got: String,
        /// The one expected.
        expected: String,
    },
}

/// Copies `binary` into `dir` (as `braid-proxy-<digest prefix>`, executable by the owner
/// only), checking its SHA-256 against `expected` when given; returns the copy and its
/// digest. A mismatch leaves nothing behind.
pub fn install(
    binary: &Path,
    dir: &Path,
    expected: Option<&str>,
) -> Result<(PathBuf, String), InstallError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InstallError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let partial = dir.join(format!(".incoming-{}", std::process::id()));
    let mut from = std::fs::File::open(binary).map_err(io(binary))?;
    let mut to = std::fs::File::create(&partial).map_err(io(&partial))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).map_err(io(binary))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(io(&partial))?;
    }
    to.sync_all().map_err(io(&partial))?;
    drop(to);
    let got = hex(&hasher.finalize());
    if let Some(expected) = expected
        && got != expected
    {
        let _ = std::fs::remove_file(&partial);
        return Err(InstallError::Mismatch {
            path: binary.to_path_buf(),
            got,
            expected: expected.to_owned(),
        });
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&partial))?;
    let installed = dir.join(format!("braid-proxy-{}", &got[..16]));
    std::fs::rename(&partial, &installed).map_err(io(&installed))?;
    Ok((installed, got))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_of_the_expected_digest_is_installed_and_another_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("new");
        std::fs::write(&binary, b"abc").unwrap();
        // sha256("abc")
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let (installed, digest) = install(&binary, &dir.path().join("bin"), Some(abc)).unwrap();
        assert_eq!(digest, abc);
        assert_eq!(std::fs::read(&installed).unwrap(), b"abc");

        let wrong = "0".repeat(64);
        let err = install(&binary, &dir.path().join("bin"), Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains("not installed"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("bin")).unwrap().collect();
        assert_eq!(left.len(), 1, "the refused copy was left behind");
    }
}
