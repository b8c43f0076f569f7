//! Helpers for tests of the crates that use this one (feature `testing`).

use std::path::{Path, PathBuf};

/// Writes a new self-signed certificate for `name` and its key as `dir/NAME.pem` and
/// `dir/NAME.key`; returns their paths.
///
/// # Panics
/// When generation or writing fails.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key generation");
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).expect("certificate parameters");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("certificate generation");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("writing the certificate");
    std::fs::write(&k, key.serialize_pem()).expect("writing the key");
    (c, k)
}
