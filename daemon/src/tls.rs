//! Reading PEM certificates and keys, and checking them before a daemon relies on them, so
//! `check-config` finds a broken file rather than the first connection.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Every certificate in a PEM file; at least one.
///
/// # Errors
/// A message saying why the file is unusable (without the path: the caller names it).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_certificates(&std::fs::read(path).map_err(|e| e.to_string())?)
}

/// Every certificate in PEM text; at least one.
///
/// # Errors
/// A message saying why the text is unusable.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// The private key in a PEM file.
///
/// # Errors
/// A message saying why the file is unusable.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    parse_private_key(&std::fs::read(path).map_err(|e| e.to_string())?)
}

/// The private key in PEM text.
///
/// # Errors
/// A message saying why the text is unusable.
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| pem_error(&e))
}

/// Checks that `key` is the private key of the first certificate of `certs`.
///
/// # Errors
/// When the key cannot be used or belongs to another certificate.
pub fn check_pair(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs.to_vec(), key.clone_key(), &provider)
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key does not belong to the certificate".to_owned()
            }
            e => e.to_string(),
        })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind in it".to_owned(),
        e => format!("not valid PEM: {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A self-signed certificate and its key, and a second key, made once with rcgen.
    fn pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn pairs_match_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, a_key) = pair(dir.path(), "a");
        let (_, b_key) = pair(dir.path(), "b");
        let certs = certificates(&a_cert).unwrap();
        check_pair(&certs, &private_key(&a_key).unwrap()).unwrap();
        let err = check_pair(&certs, &private_key(&b_key).unwrap()).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
        assert!(certificates(&a_key).unwrap_err().contains("no PEM"));
        assert!(private_key(&a_cert).is_err());
        std::fs::write(dir.path().join("junk"), "hello").unwrap();
        assert!(certificates(&dir.path().join("junk")).is_err());
        assert!(
            certificates(&dir.path().join("missing"))
                .unwrap_err()
                .contains("No such file")
        );
    }
}
