//! `hub pki`: a small CA for one warren installation, so nobody needs openssl by hand.
//!
//! `init` writes `ca.pem`/`ca.key` and the hub's server certificate `hub.pem`/`hub.key`;
//! `issue NAME` writes `NAME.pem`/`NAME.key`, a client certificate whose CN is the edge id.
//! Private keys are created with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use thiserror::Error;
use warren_proto::topic::valid_name;

/// Why a PKI operation failed.
#[derive(Debug, Error)]
pub enum PkiError {
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `init` would overwrite an existing CA.
    #[error(
        "{0} already exists; remove it to start a new CA (every issued certificate becomes invalid)"
    )]
    Exists(PathBuf),
    /// The name cannot be an edge id.
    #[error("`{0}` is not a valid edge id (1 to 64 characters of [A-Za-z0-9._-])")]
    BadName(String),
}

/// Paths of a certificate and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (mode 0600).
    pub key: PathBuf,
}

/// Creates the CA and the hub's server certificate in `dir`, valid for `names` (host names or
/// IP addresses the edges use to reach the hub) plus `localhost`, `127.0.0.1` and `::1`.
///
/// # Errors
/// [`PkiError::Exists`] when `dir` already holds a CA; I/O or generation errors.
pub fn init(dir: &Path, names: &[String]) -> Result<Issued, PkiError> {
    let ca_cert = dir.join("ca.pem");
    if ca_cert.exists() {
        return Err(PkiError::Exists(ca_cert));
    }
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = dn("warren CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    write(&ca_cert, &ca_pem, false)?;

    let mut sans: Vec<String> = names.to_vec();
    for default in ["localhost", "127.0.0.1", "::1"] {
        if !sans.iter().any(|n| n == default) {
            sans.push(default.to_owned());
        }
    }
    let issuer = Issuer::new(ca, ca_key);
    leaf(
        dir,
        "hub",
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
    )
}

/// Issues a client certificate for edge `name` (its CN) in `dir`, signed by the CA there.
///
/// # Errors
/// [`PkiError::BadName`], a missing CA, I/O or generation errors.
pub fn issue(dir: &Path, name: &str) -> Result<Issued, PkiError> {
    if !valid_name(name) || name == "ca" || name == "hub" {
        return Err(PkiError::BadName(name.to_owned()));
    }
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|source| io(&p, source));
    let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(dir.join("ca.pem"))?, ca_key)?;
    leaf(
        dir,
        name,
        vec![name.to_owned()],
        ExtendedKeyUsagePurpose::ClientAuth,
        &issuer,
    )
}

fn leaf(
    dir: &Path,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Issued, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = dn(cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer)?;
    let issued = Issued {
        cert: dir.join(format!("{cn}.pem")),
        key: dir.join(format!("{cn}.key")),
    };
    write(&issued.key, &key.serialize_pem(), true)?;
    write(&issued.cert, &cert.pem(), false)?;
    Ok(issued)
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), PkiError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 });
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_then_issue() {
        let dir = tempfile::tempdir().unwrap();
        let hub = init(dir.path(), &["hub.example".into()]).unwrap();
        assert!(hub.cert.exists());
        let mode = std::fs::metadata(&hub.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(init(dir.path(), &[]), Err(PkiError::Exists(_))));
        let edge = issue(dir.path(), "gw-1").unwrap();
        assert!(
            std::fs::read_to_string(edge.cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(matches!(
            issue(dir.path(), "a/b"),
            Err(PkiError::BadName(_))
        ));
        assert!(matches!(
            issue(dir.path(), "hub"),
            Err(PkiError::BadName(_))
        ));
    }
}
