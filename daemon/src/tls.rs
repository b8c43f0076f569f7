//! Reading PEM certificates and keys that a config names, and checking them before a daemon
//! relies on them, so `check-config` finds a broken file rather than the first connection.
//! Errors name the config key and the file.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::ConfigError;

/// Certificates read from a file: the PEM text (for clients that take bytes) and the parsed
/// certificates.
#[derive(Debug)]
pub struct Certificates {
    /// The file's text.
    pub pem: Vec<u8>,
    /// The certificates in it; at least one.
    pub certs: Vec<CertificateDer<'static>>,
}

/// A certificate and its key, checked to belong together.
#[derive(Debug)]
pub struct KeyPair {
    /// The certificate file's text.
    pub cert_pem: Vec<u8>,
    /// The key file's text.
    pub key_pem: Vec<u8>,
    /// The certificate chain.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

/// Reads the certificates in `file`, which the key `key` of the config file `config` names.
///
/// # Errors
/// A [`ConfigError`] naming `key` and `file`.
pub fn load_certificates(
    config: &Path,
    key: &str,
    file: &Path,
) -> Result<Certificates, ConfigError> {
    let bad = |e: &dyn std::fmt::Display| ConfigError::file(config, key, file, e);
    let pem = std::fs::read(file).map_err(|e| bad(&e))?;
    let certs = parse_certificates(&pem).map_err(|e| bad(&e))?;
    Ok(Certificates { pem, certs })
}

/// Reads a certificate and its key, named by the keys `cert.0` and `key.0` of the config file
/// `config`, and checks that the key belongs to the certificate.
///
/// # Errors
/// A [`ConfigError`] naming the key and the file at fault.
pub fn load_pair(
    config: &Path,
    cert: (&str, &Path),
    key: (&str, &Path),
) -> Result<KeyPair, ConfigError> {
    let Certificates {
        pem: cert_pem,
        certs,
    } = load_certificates(config, cert.0, cert.1)?;
    let bad = |e: &dyn std::fmt::Display| ConfigError::file(config, key.0, key.1, e);
    crate::files::warn_if_exposed(key.1);
    let key_pem = std::fs::read(key.1).map_err(|e| bad(&e))?;
    let private = parse_private_key(&key_pem).map_err(|e| bad(&e))?;
    check_pair(&certs, &private).map_err(|e| bad(&e))?;
    Ok(KeyPair {
        cert_pem,
        key_pem,
        certs,
        key: private,
    })
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

/// A certificate is reported (Nagios WARNING) when it ends within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What warren needs to know of a certificate: whose it is, which one, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject's common name: an edge id, for an edge's certificate.
    pub cn: Option<String>,
    /// The serial number, lower-case hex, as a revocation list names it.
    pub serial: String,
    /// The end of its validity, seconds since the epoch.
    pub not_after: i64,
}

impl CertFacts {
    /// Reads a DER certificate.
    ///
    /// # Errors
    /// When it is not a certificate.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        Ok(Self {
            cn: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            serial: hex(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

/// A warning when a certificate that ends at `not_after` has ended or ends within
/// [`EXPIRY_WARNING_DAYS`] of `now` (both seconds since the epoch); `whose` names it.
pub fn expiry_warning(whose: &str, not_after: i64, now: i64) -> Option<String> {
    let days = (not_after - now).div_euclid(86_400);
    if not_after <= now {
        Some(format!("{whose} certificate has expired"))
    } else if days < EXPIRY_WARNING_DAYS {
        Some(format!("{whose} certificate expires in {days} days"))
    } else {
        None
    }
}

/// Lower-case hex of `bytes`, without leading zero bytes (as serial numbers are compared).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
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
    use crate::testing::self_signed as pair;

    #[test]
    fn pairs_match_or_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = Path::new("x.toml");
        let (a_cert, a_key) = pair(dir.path(), "a");
        let (_, b_key) = pair(dir.path(), "b");
        let good = load_pair(config, ("cert_file", &a_cert), ("key_file", &a_key)).unwrap();
        assert_eq!(good.certs.len(), 1);
        assert_eq!(good.cert_pem, std::fs::read(&a_cert).unwrap());
        let err = |r: Result<KeyPair, ConfigError>| r.unwrap_err().to_string();
        let wrong = err(load_pair(
            config,
            ("cert_file", &a_cert),
            ("key_file", &b_key),
        ));
        assert!(
            wrong.contains("`key_file`") && wrong.contains("does not belong"),
            "{wrong}"
        );
        let swapped = err(load_pair(
            config,
            ("cert_file", &a_key),
            ("key_file", &a_cert),
        ));
        assert!(
            swapped.contains("`cert_file`") && swapped.contains("no PEM"),
            "{swapped}"
        );
        let not_a_key = err(load_pair(
            config,
            ("cert_file", &a_cert),
            ("key_file", &a_cert),
        ));
        assert!(not_a_key.contains("`key_file`"), "{not_a_key}");
        let facts = CertFacts::of(&good.certs[0]).unwrap();
        assert_eq!(facts.cn.as_deref(), Some("a"));
        assert!(!facts.serial.is_empty());
        let days = |d: i64| facts.not_after - d * 86_400;
        let warning = |whose, now| expiry_warning(whose, facts.not_after, now);
        assert_eq!(warning("x", days(31)), None);
        assert_eq!(
            warning("the hub's", days(10)).as_deref(),
            Some("the hub's certificate expires in 10 days")
        );
        assert_eq!(
            warning("x", days(-1)).as_deref(),
            Some("x certificate has expired")
        );
        std::fs::write(dir.path().join("junk"), "hello").unwrap();
        assert!(load_certificates(config, "ca_file", &dir.path().join("junk")).is_err());
        let missing = load_certificates(config, "ca_file", &dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("`ca_file`") && missing.contains("No such file"),
            "{missing}"
        );
    }
}
