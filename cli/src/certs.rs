//! A private certificate authority for a registry cluster (`registryctl tls ca|cert`).
//!
//! [`new_ca`] makes a self-signed CA; [`issue`] signs a certificate for the names and IP
//! addresses a server is reached at, usable as server and client certificate. Keys are ECDSA
//! P-256. What is made here never leaves the machine it was made on except as the files the
//! operator copies; nothing is built in.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("a certificate needs at least one DNS name or IP address")]
    NoNames,
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clocks a little behind the issuer's.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

/// A new self-signed CA named `name`, valid for `days`.
pub fn new_ca(name: &str, days: u32) -> Result<CertPair, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate for `names` (DNS names or IP addresses; the first is also its common name),
/// signed by `ca`, valid for `days`.
pub fn issue(ca: &CertPair, names: &[String], days: u32) -> Result<CertPair, CertError> {
    let first = names.first().ok_or(CertError::NoNames)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, first);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_loads_as_server_and_client_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("test CA", 1).unwrap();
        let leaf = issue(&ca, &["127.0.0.1".into(), "localhost".into()], 1).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (ca_path, cert, key) = (
            write("ca.pem", &ca.cert_pem),
            write("cert.pem", &leaf.cert_pem),
            write("key.pem", &leaf.key_pem),
        );
        registry_common::tls::ServerTls::from_files(&cert, &key).unwrap();
        registry_common::tls::ClientTls::new(Some(&ca_path)).unwrap();
        assert!(matches!(issue(&ca, &[], 1), Err(CertError::NoNames)));
    }
}
