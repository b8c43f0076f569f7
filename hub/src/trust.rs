//! What the TLS front trusts: the hub's certificate, the CA that signs edges' certificates, and
//! the revocation list (`hub pki revoke`). The list is read again when its file changes or on
//! SIGHUP, without a restart: new handshakes with a revoked certificate fail, and the sessions
//! of certificates it newly names are closed.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the revocation list's file is looked at.
const POLL: Duration = Duration::from_secs(2);

/// The TLS set-up in force.
#[derive(Clone)]
pub struct Trust {
    /// Accepts handshakes.
    pub acceptor: TlsAcceptor,
    /// Serial numbers (lower-case hex) of revoked certificates.
    pub revoked: Arc<HashSet<String>>,
    /// Whether edges must present a certificate.
    pub mutual: bool,
}

/// What a [`Trust`] is built from, kept to build it again.
pub struct TrustSource {
    /// The hub's certificate chain.
    pub certs: Vec<CertificateDer<'static>>,
    /// Its key.
    pub key: PrivateKeyDer<'static>,
    /// CAs of edges' certificates; none: no certificate is asked for.
    pub client_cas: Vec<CertificateDer<'static>>,
    /// The revocation list, PEM.
    pub crl_file: Option<PathBuf>,
}

impl TrustSource {
    /// Builds the TLS set-up, reading the revocation list.
    ///
    /// # Errors
    /// Why the certificates or the list cannot serve (the caller names the file).
    pub fn build(&self) -> Result<Trust, String> {
        let (crls, revoked) = match &self.crl_file {
            Some(path) => read_crls(&std::fs::read(path).map_err(|e| e.to_string())?)?,
            None => (Vec::new(), HashSet::new()),
        };
        let builder = rustls::ServerConfig::builder();
        let builder = if self.client_cas.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            for ca in &self.client_cas {
                roots.add(ca.clone()).map_err(|e| e.to_string())?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .with_crls(crls)
                // The list comes from the CA that signs the edges; the CA itself is a root.
                .only_check_end_entity_revocation()
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        };
        let config = builder
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        Ok(Trust {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            revoked: Arc::new(revoked),
            mutual: !self.client_cas.is_empty(),
        })
    }

    /// Rebuilds the set-up when the revocation list's file changes or SIGHUP arrives, until
    /// `stop`. A list that cannot be read is logged and the one in force kept.
    pub async fn watch(self, tx: watch::Sender<Trust>, stop: CancellationToken) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let Some(path) = self.crl_file.clone() else {
            // Nothing to reload; SIGHUP must still not end the hub.
            while tokio::select! {
                () = stop.cancelled() => false,
                Some(()) = async { hup.as_mut()?.recv().await } => true,
            } {
                tracing::info!("SIGHUP: no revocation list is configured; nothing to reload.");
            }
            return;
        };
        // Size too: two revocations within the file system's time granularity differ in it.
        let modified = || {
            std::fs::metadata(&path)
                .and_then(|m| Ok((m.modified()?, m.len())))
                .ok()
        };
        let mut seen: Option<(SystemTime, u64)> = modified();
        let mut tick = tokio::time::interval(POLL);
        loop {
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = async { hup.as_mut()?.recv().await } => true,
            };
            let now = modified();
            if !forced && now == seen {
                continue;
            }
            seen = now;
            match self.build() {
                Ok(trust) => {
                    tracing::info!(file = %path.display(), revoked = trust.revoked.len(), "Revocation list loaded.");
                    tx.send_replace(trust);
                }
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "Revocation list unusable; the previous one stays in force.");
                }
            }
        }
    }
}

/// The revocation lists in PEM text, and the serial numbers they revoke.
///
/// # Errors
/// When the text holds no valid list.
pub fn read_crls(
    pem: &[u8],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, HashSet<String>), String> {
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM revocation list: {e:?}"))?;
    if crls.is_empty() {
        return Err("no PEM revocation list (X509 CRL) in it".into());
    }
    let mut revoked = HashSet::new();
    for crl in &crls {
        let (_, parsed) = x509_parser::parse_x509_crl(crl).map_err(|e| e.to_string())?;
        revoked.extend(
            parsed
                .iter_revoked_certificates()
                .map(|r| warren_daemon::tls::hex(r.raw_serial())),
        );
    }
    Ok((crls, revoked))
}
