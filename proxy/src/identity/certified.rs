//! A certificate the proxy can present, built from the certificate itself in every path
//! (the operator's answer, or files): its identity and expiry are read from the leaf,
//! its key must be the leaf's, and an answer from the operator must name the workload
//! the proxy runs as (ztunnel's CA client checks the same).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use braid_api::control::CertificateResponse;
use braid_api::identity::WorkloadId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::spiffe_id;

/// A certificate with its key and the roots that verify peers.
pub struct Certified {
    /// The SPIFFE identity it certifies, as its leaf names it.
    pub identity: String,
    /// The certificate, then the CA's chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The roots that verify peers.
    pub trust: Vec<CertificateDer<'static>>,
    /// When it stops being valid, as its leaf says.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Whom the proxy runs as (`--pod-namespace`, `--service-account`): a certificate from
/// the operator must name this workload, in any trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunsAs {
    /// The pod's namespace.
    pub namespace: String,
    /// Its service account, when known.
    pub service_account: Option<String>,
}

/// Why a certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertifiedError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// PEM that does not hold what it should.
    #[error("{what}: {message}")]
    Pem {
        /// Which PEM (a file, or a field of the operator's answer).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The leaf does not parse, or names no single SPIFFE identity.
    #[error("{what}: {message}")]
    Leaf {
        /// Where the leaf came from.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The key is not the leaf's: every handshake would fail.
    #[error("{what}: the private key is not the key of the certificate")]
    KeyMismatch {
        /// Where the certificate came from.
        what: String,
    },
    /// The operator's answer names one identity and its certificate another.
    #[error("the operator's answer says {said} but its certificate names {named}")]
    Contradicts {
        /// The answer's `identity`.
        said: String,
        /// The leaf's SPIFFE URI.
        named: String,
    },
    /// The certificate names a workload other than the one the proxy runs as.
    #[error(
        "the certificate names {named}, not this pod's workload (namespace {namespace}{sa}): refusing to present another workload's identity",
        sa = service_account.as_deref().map(|s| format!(", service account {s}")).unwrap_or_default()
    )]
    NotOurs {
        /// The leaf's SPIFFE URI.
        named: String,
        /// The namespace the proxy runs in.
        namespace: String,
        /// Its service account, when known.
        service_account: Option<String>,
    },
}

impl Certified {
    /// The operator's `answer` for the key `key`. Identity and expiry are read from the
    /// certificate (the answer's copies must agree, and are not trusted for more), and
    /// the certificate must name `runs_as` when given.
    pub fn from_answer(
        answer: &CertificateResponse,
        key: PrivatePkcs8KeyDer<'static>,
        runs_as: Option<&RunsAs>,
    ) -> Result<Self, CertifiedError> {
        let chain = pems(answer.chain.as_bytes(), "the operator's chain")?;
        let trust = pems(
            answer.trust_bundle.as_bytes(),
            "the operator's trust bundle",
        )?;
        let certified = Self::new(chain, key, trust, "the operator's certificate")?;
        if certified.identity != answer.identity {
            return Err(CertifiedError::Contradicts {
                said: answer.identity.clone(),
                named: certified.identity,
            });
        }
        if let Some(runs_as) = runs_as {
            certified.check_names(runs_as)?;
        }
        Ok(certified)
    }

    /// Reads the PEM chain `cert` (leaf first, carrying one SPIFFE URI) and its PKCS#8
    /// key `key`, for hosts the operator does not certify; an error names the file and
    /// what is wrong.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, CertifiedError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CertifiedError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let chain = pems(&read(cert)?, &cert.display().to_string())?;
        let key_pem = read(key)?;
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let text = String::from_utf8_lossy(&key_pem);
            let other_form =
                text.contains("BEGIN EC PRIVATE KEY") || text.contains("BEGIN RSA PRIVATE KEY");
            let hint = if other_form {
                format!(
                    "; this is a SEC1/PKCS#1 key, convert it: openssl pkcs8 -topk8 -nocrypt -in {k} -out {k}.pkcs8",
                    k = key.display()
                )
            } else {
                String::new()
            };
            CertifiedError::Pem {
                what: key.display().to_string(),
                message: format!("not a PKCS#8 PEM private key ({e}){hint}"),
            }
        })?;
        Self::new(chain, key_der, Vec::new(), &cert.display().to_string())
    }

    /// `chain` (leaf first), `key` and `trust` as another proxy held them (a predecessor
    /// handing over), checked like any other; `what` names them in errors.
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
        trust: Vec<CertificateDer<'static>>,
        what: &str,
    ) -> Result<Self, CertifiedError> {
        Self::new(chain, key, trust, what)
    }

    /// `chain` (leaf first) with `key`: the leaf names one SPIFFE identity and its
    /// expiry, and its public key is `key`'s.
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
        trust: Vec<CertificateDer<'static>>,
        what: &str,
    ) -> Result<Self, CertifiedError> {
        let leaf_err = |message: String| CertifiedError::Leaf {
            what: what.to_owned(),
            message,
        };
        let leaf = chain
            .first()
            .ok_or_else(|| leaf_err("no certificate".into()))?;
        let identity = spiffe_id(leaf).ok_or_else(|| {
            leaf_err(
                "the certificate carries no single spiffe:// URI SAN, so it names no mesh identity"
                    .into(),
            )
        })?;
        let (_, parsed) = X509Certificate::from_der(leaf).map_err(|e| leaf_err(e.to_string()))?;
        let not_after =
            UNIX_EPOCH + Duration::from_secs(parsed.validity().not_after.timestamp().max(0) as u64);
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(key.clone_key()))
                .map_err(|e| CertifiedError::Pem {
                    what: format!("the key of {what}"),
                    message: e.to_string(),
                })?;
        match rustls::sign::CertifiedKey::new(chain.clone(), signer).keys_match() {
            // Unknown: the key type cannot say its public key; nothing to compare.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => {
                return Err(CertifiedError::KeyMismatch {
                    what: what.to_owned(),
                });
            }
        }
        Ok(Self {
            identity,
            chain,
            key,
            trust,
            not_after,
        })
    }

    /// Refuses a certificate naming any workload but `runs_as`.
    fn check_names(&self, runs_as: &RunsAs) -> Result<(), CertifiedError> {
        let ours = self.identity.parse::<WorkloadId>().is_ok_and(|id| {
            id.namespace == runs_as.namespace
                && runs_as
                    .service_account
                    .as_ref()
                    .is_none_or(|sa| *sa == id.service_account)
        });
        if ours {
            return Ok(());
        }
        Err(CertifiedError::NotOurs {
            named: self.identity.clone(),
            namespace: runs_as.namespace.clone(),
            service_account: runs_as.service_account.clone(),
        })
    }
}

/// The certificates of the PEM `text`; at least one.
fn pems(text: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, CertifiedError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text)
        .collect::<Result<_, _>>()
        .map_err(|e| CertifiedError::Pem {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertifiedError::Pem {
            what: what.to_owned(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

    use super::*;

    const PAYMENTS: &str = "spiffe://cluster.local/ns/shop/sa/payments";

    /// A self-signed leaf for `uri`, valid until 2031, and its key.
    fn leaf(uri: &str) -> (String, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        (params.self_signed(&key).unwrap().pem(), key)
    }

    fn answer(identity: &str, chain: &str) -> CertificateResponse {
        CertificateResponse {
            identity: identity.into(),
            chain: chain.into(),
            not_after: String::new(),
            // Not what the certificate says: the certificate's own expiry must win.
            not_after_unix: 4_000_000_000,
            trust_bundle: chain.into(),
        }
    }

    fn pkcs8(key: &KeyPair) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(key.serialize_der())
    }

    fn payments() -> RunsAs {
        RunsAs {
            namespace: "shop".into(),
            service_account: Some("payments".into()),
        }
    }

    #[test]
    fn identity_and_expiry_come_from_the_certificate() {
        let (pem, key) = leaf(PAYMENTS);
        let c = Certified::from_answer(&answer(PAYMENTS, &pem), pkcs8(&key), Some(&payments()))
            .unwrap();
        assert_eq!(c.identity, PAYMENTS);
        let until = c.not_after.duration_since(UNIX_EPOCH).unwrap().as_secs();
        // 2031-01-02T00:00:00Z
        assert_eq!(until, 1_925_078_400);
    }

    #[test]
    fn a_certificate_for_another_workload_is_refused() {
        let ledger = "spiffe://cluster.local/ns/shop/sa/ledger";
        let (pem, key) = leaf(ledger);
        let err = Certified::from_answer(&answer(ledger, &pem), pkcs8(&key), Some(&payments()))
            .unwrap_err();
        assert!(matches!(err, CertifiedError::NotOurs { .. }), "{err}");
        assert!(err.to_string().contains("sa/ledger"), "{err}");
        // Another namespace, the service account unknown: refused too.
        let elsewhere = RunsAs {
            namespace: "bank".into(),
            service_account: None,
        };
        let (pem, key) = leaf(PAYMENTS);
        assert!(
            Certified::from_answer(&answer(PAYMENTS, &pem), pkcs8(&key), Some(&elsewhere)).is_err()
        );
    }

    #[test]
    fn an_answer_contradicting_its_certificate_is_refused() {
        let (pem, key) = leaf(PAYMENTS);
        let err = Certified::from_answer(
            &answer("spiffe://cluster.local/ns/shop/sa/admin", &pem),
            pkcs8(&key),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, CertifiedError::Contradicts { .. }), "{err}");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let (pem, _) = leaf(PAYMENTS);
        let (_, other) = leaf(PAYMENTS);
        let err = Certified::from_answer(&answer(PAYMENTS, &pem), pkcs8(&other), None).unwrap_err();
        assert!(matches!(err, CertifiedError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn files_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (pem, key) = leaf(PAYMENTS);
        let cert = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let c = Certified::from_files(&cert, &key_file).unwrap();
        assert_eq!(c.identity, PAYMENTS);
        let (_, other) = leaf(PAYMENTS);
        std::fs::write(&key_file, other.serialize_pem()).unwrap();
        let err = Certified::from_files(&cert, &key_file).unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
        // A SEC1 key (what `openssl ecparam -genkey` writes) gets the command that converts it.
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        std::fs::write(&key_file, sec1).unwrap();
        let err = Certified::from_files(&cert, &key_file).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
        let missing = dir.path().join("nope.pem");
        let err = Certified::from_files(&missing, &key_file).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }
}
