//! `hub pki`: a small CA for one warren installation, so nobody needs openssl by hand.
//!
//! `init` writes `ca.pem`/`ca.key`, the hub's server certificate `hub.pem`/`hub.key` and an
//! empty revocation list `crl.pem`; `issue NAME` writes `NAME.pem`/`NAME.key`, a client
//! certificate whose CN is the edge id; `revoke NAME` adds its certificate to `crl.pem`, which
//! a hub with `crl_file` pointing there picks up while running; `list` shows what was issued.
//! Private keys are created with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use thiserror::Error;
use time::OffsetDateTime;
use warren_daemon::tls::{self, CertFacts};
use warren_proto::topic::valid_name;

use crate::passwd::HUB_CLIENT_ID;

/// How long a certificate `init` or `issue` makes is valid by default.
pub const DEFAULT_DAYS: u32 = 730;
/// How long the CA is valid: past any certificate it signs.
const CA_DAYS: i64 = 20 * 365;
/// The revocation list's own "next update": webpki does not enforce it, and a hub must never
/// start refusing every edge because nobody re-signed the list.
const CRL_DAYS: i64 = 100 * 365;
/// Files in the directory that are not issued certificates.
const NOT_ISSUED: [&str; 3] = ["ca", "hub", "crl"];

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
    /// `issue` would overwrite a certificate that may still be in use.
    #[error(
        "{0} exists; `hub pki issue --replace` revokes it and issues a new one (or `hub pki revoke` it first)"
    )]
    Issued(PathBuf),
    /// `init` would overwrite an existing CA.
    #[error(
        "{0} already exists; remove it to start a new CA (every issued certificate becomes invalid)"
    )]
    Exists(PathBuf),
    /// The name cannot be an edge id.
    #[error(
        "`{0}` is not a valid edge id (1 to 64 characters of [A-Za-z0-9._-], not ca, hub, crl or warren-hub…)"
    )]
    BadName(String),
    /// A certificate or revocation list in the directory cannot be read.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One certificate `hub pki list` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The edge id (file name).
    pub name: String,
    /// What the certificate says.
    pub facts: CertFacts,
    /// Whether the revocation list names it.
    pub revoked: bool,
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
pub fn init(dir: &Path, names: &[String], days: u32) -> Result<Issued, PkiError> {
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
    (ca.not_before, ca.not_after) = validity(CA_DAYS);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    write(&ca_cert, &ca_pem, false)?;
    let issuer = Issuer::new(ca, ca_key);
    write_crl(dir, &issuer, Vec::new())?;

    let mut sans: Vec<String> = names.to_vec();
    for default in ["localhost", "127.0.0.1", "::1"] {
        if !sans.iter().any(|n| n == default) {
            sans.push(default.to_owned());
        }
    }
    leaf(
        dir,
        "hub",
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        &issuer,
        days,
    )
}

/// Issues a client certificate for edge `name` (its CN) in `dir`, signed by the CA there.
/// A certificate already issued to `name` is never silently overwritten (it would stay valid,
/// and out of reach of `revoke`): with `replace` it is revoked first, otherwise refused —
/// unless it is revoked already.
///
/// # Errors
/// [`PkiError::BadName`], [`PkiError::Issued`], a missing CA, I/O or generation errors.
pub fn issue(dir: &Path, name: &str, days: u32, replace: bool) -> Result<Issued, PkiError> {
    check_name(name)?;
    let existing = dir.join(format!("{name}.pem"));
    if existing.exists() {
        let serial = cert_facts(&existing)?.serial;
        let revoked = revoked_entries(dir)?
            .iter()
            .any(|r| tls::hex(r.serial_number.as_ref()) == serial);
        if !revoked && !replace {
            return Err(PkiError::Issued(existing));
        }
        if !revoked {
            revoke(dir, name)?;
        }
    }
    leaf(
        dir,
        name,
        vec![name.to_owned()],
        ExtendedKeyUsagePurpose::ClientAuth,
        &ca(dir)?,
        days,
    )
}

/// Revokes the certificate issued to `name`: `crl.pem` is written again (atomically) with it
/// added. Returns its serial number.
///
/// # Errors
/// [`PkiError::BadName`], a missing CA or certificate, I/O or generation errors.
pub fn revoke(dir: &Path, name: &str) -> Result<String, PkiError> {
    check_name(name)?;
    let facts = cert_facts(&dir.join(format!("{name}.pem")))?;
    let issuer = ca(dir)?;
    let mut revoked = revoked_entries(dir)?;
    if !revoked
        .iter()
        .any(|r| tls::hex(r.serial_number.as_ref()) == facts.serial)
    {
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&unhex(&facts.serial)),
            revocation_time: OffsetDateTime::now_utc(),
            reason_code: Some(RevocationReason::Unspecified),
            invalidity_date: None,
        });
    }
    write_crl(dir, &issuer, revoked)?;
    Ok(facts.serial)
}

/// Every certificate issued in `dir` (the hub's included), by name, with its state.
///
/// # Errors
/// When the directory, a certificate or the revocation list cannot be read.
pub fn list(dir: &Path) -> Result<Vec<Listed>, PkiError> {
    let revoked: Vec<String> = revoked_entries(dir)?
        .iter()
        .map(|r| tls::hex(r.serial_number.as_ref()))
        .collect();
    let mut listed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|source| io(dir, source))? {
        let path = entry.map_err(|source| io(dir, source))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        if name == "ca" || name == "crl" {
            continue;
        }
        let facts = cert_facts(&path)?;
        listed.push(Listed {
            name: name.to_owned(),
            revoked: revoked.contains(&facts.serial),
            facts,
        });
    }
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listed)
}

fn check_name(name: &str) -> Result<(), PkiError> {
    if !valid_name(name) || NOT_ISSUED.contains(&name) || name.starts_with(HUB_CLIENT_ID) {
        return Err(PkiError::BadName(name.to_owned()));
    }
    Ok(())
}

/// The CA in `dir`, to sign with.
fn ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|source| io(&p, source));
    let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?)?;
    Ok(Issuer::from_ca_cert_pem(
        &read(dir.join("ca.pem"))?,
        ca_key,
    )?)
}

fn cert_facts(path: &Path) -> Result<CertFacts, PkiError> {
    let unreadable = |reason: String| PkiError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| io(path, source))?;
    let certs = tls::parse_certificates(&pem).map_err(unreadable)?;
    CertFacts::of(&certs[0]).map_err(unreadable)
}

/// The entries of `crl.pem`, none when there is no such file.
fn revoked_entries(dir: &Path) -> Result<Vec<RevokedCertParams>, PkiError> {
    let path = dir.join("crl.pem");
    let unreadable = |reason: String| PkiError::Unreadable {
        path: path.clone(),
        reason,
    };
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(&path, source)),
    };
    let (crls, _) = crate::trust::read_crls(&pem).map_err(unreadable)?;
    let mut entries = Vec::new();
    for crl in &crls {
        let (_, parsed) =
            x509_parser::parse_x509_crl(crl).map_err(|e| unreadable(e.to_string()))?;
        for r in parsed.iter_revoked_certificates() {
            entries.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(r.raw_serial()),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            });
        }
    }
    Ok(entries)
}

/// Signs and writes `crl.pem` through a temporary file and a rename, so a hub reading it
/// never sees half a list.
fn write_crl(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    revoked_certs: Vec<RevokedCertParams>,
) -> Result<(), PkiError> {
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(CRL_DAYS),
        crl_number: SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or_default()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let pem = params.signed_by(issuer)?.pem()?;
    let tmp = dir.join(".crl.pem.new");
    write(&tmp, &pem, false)?;
    let path = dir.join("crl.pem");
    std::fs::rename(&tmp, &path).map_err(|source| io(&path, source))
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// From an hour ago (clocks differ) to `days` from now.
fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(days),
    )
}

fn leaf(
    dir: &Path,
    cn: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
    days: u32,
) -> Result<Issued, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    (params.not_before, params.not_after) = validity(i64::from(days));
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
        let hub = init(dir.path(), &["hub.example".into()], DEFAULT_DAYS).unwrap();
        assert!(hub.cert.exists());
        let mode = std::fs::metadata(&hub.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            init(dir.path(), &[], DEFAULT_DAYS),
            Err(PkiError::Exists(_))
        ));
        let edge = issue(dir.path(), "gw-1", 10, false).unwrap();
        assert!(
            std::fs::read_to_string(edge.cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        for bad in ["a/b", "hub", "crl", "warren-hub", "warren-hub-x"] {
            assert!(
                matches!(issue(dir.path(), bad, 10, false), Err(PkiError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn validity_revocation_and_list() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[], DEFAULT_DAYS).unwrap();
        issue(dir.path(), "gw-1", 10, false).unwrap();
        issue(dir.path(), "gw-2", DEFAULT_DAYS, false).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let listed = list(dir.path()).unwrap();
        let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["gw-1", "gw-2", "hub"]);
        let days_left = |l: &Listed| (l.facts.not_after - now + 60) / 86_400;
        assert_eq!(days_left(&listed[0]), 10);
        assert_eq!(days_left(&listed[1]), 730);
        assert!(listed.iter().all(|l| !l.revoked));

        let serial = revoke(dir.path(), "gw-1").unwrap();
        assert_eq!(serial, listed[0].facts.serial);
        assert_eq!(
            revoke(dir.path(), "gw-1").unwrap(),
            serial,
            "revoking twice is harmless"
        );
        let (_, revoked) =
            crate::trust::read_crls(&std::fs::read(dir.path().join("crl.pem")).unwrap()).unwrap();
        assert_eq!(revoked.into_iter().collect::<Vec<_>>(), [serial]);
        let listed = list(dir.path()).unwrap();
        assert!(listed[0].revoked && !listed[1].revoked && !listed[2].revoked);
        assert!(matches!(
            revoke(dir.path(), "nobody"),
            Err(PkiError::Io { .. })
        ));

        // A live certificate is never overwritten silently; --replace revokes it first.
        assert!(matches!(
            issue(dir.path(), "gw-2", 10, false),
            Err(PkiError::Issued(_))
        ));
        let old = listed[1].facts.serial.clone();
        issue(dir.path(), "gw-2", 10, true).unwrap();
        let listed = list(dir.path()).unwrap();
        assert_ne!(listed[1].facts.serial, old);
        assert!(!listed[1].revoked);
        let (_, revoked) =
            crate::trust::read_crls(&std::fs::read(dir.path().join("crl.pem")).unwrap()).unwrap();
        assert!(
            revoked.contains(&old),
            "the replaced certificate is revoked"
        );
        // A revoked one may be reissued without --replace.
        issue(dir.path(), "gw-1", 10, false).unwrap();
    }
}
