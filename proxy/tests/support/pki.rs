//! A throwaway mesh CA and SPIFFE certificates for proxies started with
//! `--identity-cert`/`--identity-key`, as the operator's CA would issue them.

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// A root CA.
pub struct TestCa {
    /// Its certificate (PEM): the trust bundle.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// Files of one proxy's identity.
pub struct IdentityFiles {
    pub dir: tempfile::TempDir,
}

impl IdentityFiles {
    /// `--identity-cert FILE --identity-key FILE`.
    pub fn args(&self) -> Vec<String> {
        let path = |f: &str| self.dir.path().join(f).display().to_string();
        vec![
            "--identity-cert".into(),
            path("cert.pem"),
            "--identity-key".into(),
            path("key.pem"),
        ]
    }
}

impl TestCa {
    /// A fresh root.
    pub fn new() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `spiffe_id` with its key, written to a directory.
    pub fn issue(&self, spiffe_id: &str) -> IdentityFiles {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        IdentityFiles { dir }
    }

    /// The bundle as a YAML block scalar, indented for `trustBundle: |`.
    pub fn bundle_yaml(&self) -> String {
        self.pem
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    }
}
