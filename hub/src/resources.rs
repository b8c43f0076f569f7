//! Everything the config names outside itself — certificates and keys, the users file,
//! password and token files — read and checked, and the notifiers built from them. `hub run`
//! and `hub check-config` both go through [`Resources::load`], so a config that checks is a
//! config that starts. Each error names the config key and the file.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use warren_daemon::Secret;
use warren_daemon::config::ConfigError;
use warren_daemon::tls;

use warren_daemon::tls::CertFacts;

use crate::broker::{Plan, TlsSetup};
use crate::bus::{BusOptions, client_tls};
use crate::config::{Broker, EmbeddedBroker, ExternalBroker, HubConfig, LocalAccess};
use crate::notify::{BuildContext, Notifier, NotifierName};
use crate::passwd::Users;
use crate::trust::TrustSource;

/// What `hub run` needs besides its config.
#[derive(Debug)]
pub struct Resources {
    /// How to reach or start the broker.
    pub broker: BrokerSetup,
    /// The notifiers, built.
    pub notifiers: Vec<(NotifierName, Notifier)>,
    /// Where the notifiers that publish on the hub's broker find its client, once it exists.
    pub hub_bus: Arc<OnceLock<rumqttc::AsyncClient>>,
    /// The hub's own certificate (server, or client of an external broker), to warn before
    /// it ends.
    pub certificate: Option<CertFacts>,
    /// The page's TLS and token, if it is served.
    pub web: Option<crate::web::Guard>,
    /// How to reach the store shared with other hubs, if the hub uses one.
    pub store: Option<crate::store::postgres::Options>,
}

/// The broker, ready to start or to connect to.
#[derive(Debug)]
pub enum BrokerSetup {
    /// rumqttd inside the hub.
    Embedded(Plan),
    /// Another broker: the hub's client's connection.
    External(BusOptions),
}

impl Resources {
    /// Reads every file `cfg` names and builds the notifiers.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the config key and the file at fault.
    pub fn load(cfg: &HubConfig) -> Result<Self, ConfigError> {
        // The TLS front's, rumqttc's and reqwest's rustls need a process-wide provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (broker, certificate) = match &cfg.broker {
            Broker::Embedded(b) => {
                let (plan, cert) = embedded(cfg, b)?;
                (BrokerSetup::Embedded(plan), cert)
            }
            Broker::External(b) => {
                let (opts, cert) = external(&cfg.path, b)?;
                (BrokerSetup::External(opts), cert)
            }
        };
        let cx = BuildContext::default();
        let notifiers = cfg
            .notifiers
            .iter()
            .map(|(name, c)| {
                Notifier::build(name, &c.config, &cx)
                    .map(|n| (name.clone(), n))
                    .map_err(|e| {
                        ConfigError::invalid(
                            &cfg.path,
                            format!("notifier.{name}.{}", e.key),
                            e.reason,
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let web = cfg
            .web
            .as_ref()
            .map(|w| crate::web::Guard::load(&cfg.path, w))
            .transpose()?;
        let store = match &cfg.store {
            Some(s) => {
                let url = Secret::read(&s.url_file)
                    .map_err(|e| ConfigError::file(&cfg.path, "store.url_file", &s.url_file, &e))?;
                let url = url.expose().trim().to_owned();
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    let e = format!("not a connection string: {e}");
                    return Err(ConfigError::file(
                        &cfg.path,
                        "store.url_file",
                        &s.url_file,
                        &e,
                    ));
                }
                Some(crate::store::postgres::Options {
                    url,
                    pool_size: s.pool_size,
                    lease: s.lease,
                    name: s.name.clone(),
                })
            }
            None => None,
        };
        Ok(Self {
            broker,
            notifiers,
            hub_bus: cx.hub_bus,
            certificate,
            web,
            store,
        })
    }
}

fn embedded(cfg: &HubConfig, b: &EmbeddedBroker) -> Result<(Plan, Option<CertFacts>), ConfigError> {
    let config = &cfg.path;
    let bad = |key, file: &Path, e: &dyn std::fmt::Display| ConfigError::file(config, key, file, e);
    let mut certificate = None;
    let listen_tls = match &b.listen_tls {
        Some(l) => {
            let pair = tls::load_pair(
                config,
                ("broker.cert_file", &l.cert_file),
                ("broker.key_file", &l.key_file),
            )?;
            certificate = CertFacts::of(&pair.certs[0]).ok();
            let client_cas = match &l.client_ca_file {
                Some(ca) => tls::load_certificates(config, "broker.client_ca_file", ca)?.certs,
                None => Vec::new(),
            };
            let source = TrustSource {
                certs: pair.certs,
                key: pair.key,
                client_cas,
                crl_file: l.crl_file.clone(),
            };
            // Name the file most likely at fault: the list when there is one.
            let (key, file) = match (&l.crl_file, &l.client_ca_file) {
                (Some(crl), _) => ("broker.crl_file", crl),
                (None, Some(ca)) => ("broker.client_ca_file", ca),
                (None, None) => ("broker.cert_file", &l.cert_file),
            };
            let trust = source.build().map_err(|e| bad(key, file, &e))?;
            Some(TlsSetup {
                addr: l.addr,
                source,
                trust,
            })
        }
        None => None,
    };
    let users = b
        .users_file
        .as_deref()
        .map(|p| Users::read(p).map_err(|e| bad("broker.users_file", p, &e)))
        .transpose()?;
    let plan = Plan {
        listen_tls,
        listen_local: b.listen_local,
        users,
        anonymous: b.allow_anonymous,
        local_bus: b.local_access == LocalAccess::Bus,
        legacy_topic: cfg.legacy.topic.clone(),
        max_connections: b.max_connections,
        handshake_timeout: b.handshake_timeout,
    };
    Ok((plan, certificate))
}

fn external(
    config: &Path,
    b: &ExternalBroker,
) -> Result<(BusOptions, Option<CertFacts>), ConfigError> {
    let bad = |key, file: &Path, e: &dyn std::fmt::Display| ConfigError::file(config, key, file, e);
    let (tls, certificate) = match &b.tls {
        Some(t) => {
            let client = t.client_cert.as_ref().map(|(c, k)| {
                (
                    ("broker.client_cert_file", c.as_path()),
                    ("broker.key_file", k.as_path()),
                )
            });
            let (tls, facts) = client_tls(config, ("broker.ca_file", &t.ca_file), client)?;
            (Some(tls), facts)
        }
        None => (None, None),
    };
    let password = b
        .password_file
        .as_deref()
        .map(|p| Secret::read(p).map_err(|e| bad("broker.password_file", p, &e)))
        .transpose()?;
    let opts = BusOptions {
        host: b.host.clone(),
        port: b.port,
        tls,
        credentials: b
            .username
            .clone()
            .map(|u| (u, password.unwrap_or_else(|| Secret::new("")))),
        client_id: b.client_id.clone(),
        share_group: Some(b.share_group.clone()),
    };
    Ok((opts, certificate))
}
