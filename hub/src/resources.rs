//! Everything the config names outside itself — certificates and keys, the users file,
//! password and token files — read and checked, and the notifiers built from them. `hub run`
//! and `hub check-config` both go through [`Resources::load`], so a config that checks is a
//! config that starts. Each error names the config key and the file.

use std::path::Path;

use rumqttc::TlsConfiguration;
use warren_daemon::Secret;
use warren_daemon::config::ConfigError;
use warren_daemon::tls;

use crate::broker::{self, Plan, TlsSetup};
use crate::bus::BusOptions;
use crate::config::{Broker, EmbeddedBroker, ExternalBroker, HubConfig};
use crate::front;
use crate::notify::{BuildContext, Notifier, NotifierName};

/// What `hub run` needs besides its config.
#[derive(Debug)]
pub struct Resources {
    /// How to reach or start the broker.
    pub broker: BrokerSetup,
    /// The notifiers, built.
    pub notifiers: Vec<(NotifierName, Notifier)>,
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
        let broker = match &cfg.broker {
            Broker::Embedded(b) => BrokerSetup::Embedded(embedded(&cfg.path, b)?),
            Broker::External(b) => BrokerSetup::External(external(&cfg.path, b)?),
        };
        let cx = BuildContext::new().map_err(|e| ConfigError::invalid(&cfg.path, "notifier", e))?;
        let notifiers = cfg
            .notifiers
            .iter()
            .map(|(name, c)| {
                Notifier::build(name, c, &cx)
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
        Ok(Self { broker, notifiers })
    }
}

fn embedded(config: &Path, b: &EmbeddedBroker) -> Result<Plan, ConfigError> {
    let bad = |key, file: &Path, e: &dyn std::fmt::Display| ConfigError::file(config, key, file, e);
    let listen_tls = match &b.listen_tls {
        Some(l) => {
            let pair = tls::load_pair(
                config,
                ("broker.cert_file", &l.cert_file),
                ("broker.key_file", &l.key_file),
            )?;
            let clients = match &l.client_ca_file {
                Some(ca) => {
                    let cas = tls::load_certificates(config, "broker.client_ca_file", ca)?;
                    let verifier = front::client_verifier(cas.certs)
                        .map_err(|e| bad("broker.client_ca_file", ca, &e))?;
                    Some(verifier)
                }
                None => None,
            };
            let mutual = clients.is_some();
            let acceptor = front::acceptor(pair.certs, pair.key, clients)
                .map_err(|e| bad("broker.cert_file", &l.cert_file, &e))?;
            Some(TlsSetup {
                addr: l.addr,
                acceptor,
                mutual,
            })
        }
        None => None,
    };
    let users = b
        .users_file
        .as_deref()
        .map(|p| broker::read_users(p).map_err(|e| bad("broker.users_file", p, &e)))
        .transpose()?;
    Ok(Plan {
        listen_tls,
        listen_local: b.listen_local,
        users,
        max_connections: b.max_connections,
        handshake_timeout: b.handshake_timeout,
    })
}

fn external(config: &Path, b: &ExternalBroker) -> Result<BusOptions, ConfigError> {
    let bad = |key, file: &Path, e: &dyn std::fmt::Display| ConfigError::file(config, key, file, e);
    let tls = match &b.tls {
        Some(t) => {
            let ca = tls::load_certificates(config, "broker.ca_file", &t.ca_file)?.pem;
            let client_auth = match &t.client_cert {
                Some((c, k)) => {
                    let pair = tls::load_pair(
                        config,
                        ("broker.client_cert_file", c),
                        ("broker.key_file", k),
                    )?;
                    Some((pair.cert_pem, pair.key_pem))
                }
                None => None,
            };
            Some(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            })
        }
        None => None,
    };
    let password = b
        .password_file
        .as_deref()
        .map(|p| Secret::read(p).map_err(|e| bad("broker.password_file", p, &e)))
        .transpose()?;
    Ok(BusOptions {
        host: b.host.clone(),
        port: b.port,
        tls,
        credentials: b
            .username
            .clone()
            .map(|u| (u, password.unwrap_or_else(|| Secret::new("")))),
        client_id: b.client_id.clone(),
        share_group: Some(b.share_group.clone()),
    })
}
