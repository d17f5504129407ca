//! Certificates for TLS tests: a CA, a certificate for the brokers
//! (`localhost` and `127.0.0.1`, so every broker of a local cluster can
//! share it) and one for a client, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files of one CA and the certificates it signed.
pub struct Certificates {
    pub ca: PathBuf,
    pub broker_certificate: PathBuf,
    pub broker_key: PathBuf,
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
}

impl Certificates {
    /// Makes a CA named `ca_name` and certificates signed by it, in `dir`
    /// under names starting with `prefix`.
    pub fn create(dir: &Path, prefix: &str, ca_name: &str) -> Certificates {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name = name(ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issue =
            |common_name: &str, names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
                let key = KeyPair::generate().expect("key");
                let mut params = CertificateParams::new(names).expect("params");
                params.distinguished_name = name(common_name);
                params.extended_key_usages = usages;
                let certificate = params.signed_by(&key, &ca, &ca_key).expect("certificate");
                (certificate.pem(), key.serialize_pem())
            };
        // Brokers present the same certificate when they connect to each
        // other, so it serves both ends.
        let (broker_pem, broker_key_pem) = issue(
            "broker",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_pem, client_key_pem) = issue(
            "client",
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let write = |file: &str, pem: &str| {
            let path = dir.join(format!("{prefix}{file}"));
            std::fs::write(&path, pem).expect("write PEM file");
            path
        };
        Certificates {
            ca: write("ca.pem", &ca.pem()),
            broker_certificate: write("broker.pem", &broker_pem),
            broker_key: write("broker.key", &broker_key_pem),
            client_certificate: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key_pem),
        }
    }

    /// `logd` flags that load the broker's certificate and trust the CA.
    pub fn broker_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.broker_certificate.display().to_string(),
            "--tls-key".into(),
            self.broker_key.display().to_string(),
            "--tls-ca".into(),
            self.ca.display().to_string(),
        ]
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}
