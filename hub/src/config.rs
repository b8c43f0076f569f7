//! The hub's TOML configuration: [`RawHubConfig`] as written, [`HubConfig`] once validated.
//!
//! `validate` is pure: routes must name existing notifiers, templates must parse, the broker
//! section must be complete for its mode. The files it names (certificates, passwords, tokens)
//! are read by [`crate::resources`]; `run` and `check-config` both do both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use warren_daemon::config::ConfigError;

use crate::known::KnownSourcesConfig;
use crate::notify::{NotifierConfig, NotifierName};
use crate::router::{ConditionsConfig, OneOrMany, Route, RouteConfig};
use crate::web::{Web, WebConfig};

const DEFAULT_STATE_DIR: &str = if cfg!(target_os = "freebsd") {
    "/var/db/warren/hub"
} else {
    "/var/lib/warren/hub"
};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHubConfig {
    /// Where the inbox lives.
    pub state_dir: Option<PathBuf>,
    /// The status socket. Default: `<state_dir>/hub.sock`.
    pub status_socket: Option<PathBuf>,
    /// How long SIGTERM waits for deliveries in progress.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Space kept beside the inbox, given back when the disk fills (0: none).
    #[serde(default = "default_reserve_bytes")]
    pub reserve_bytes: u64,
    /// The broker: embedded (default) or external.
    #[serde(default)]
    pub broker: RawBroker,
    /// Where the state is kept: embedded (default) or PostgreSQL, shared by hubs.
    #[serde(default)]
    pub store: RawStore,
    /// Duplicate suppression.
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Retries and timeouts of every notifier.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The hared-format republish for existing mqttwarn setups.
    #[serde(default)]
    pub legacy: LegacyConfig,
    /// Edges that go silent.
    #[serde(default)]
    pub presence: PresenceConfig,
    /// The sources each user logs in from.
    #[serde(default)]
    pub known_sources: KnownSourcesConfig,
    /// Prometheus metrics alone (`[web]` serves them with the page).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The page, its JSON API and the Prometheus metrics.
    #[serde(default)]
    pub web: WebConfig,
    /// Notifiers by name.
    #[serde(default, rename = "notifier")]
    pub notifiers: BTreeMap<NotifierName, NotifierSpec>,
    /// Routes, in order.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// Embedded rumqttd, or a client of another broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerMode {
    /// rumqttd inside the hub.
    #[default]
    Embedded,
    /// mosquitto, EMQX, VerneMQ…: the hub subscribes with a shared subscription.
    External,
}

/// What clients of `listen_local` may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalAccess {
    /// Subscribe to the legacy republish and presence.
    #[default]
    Read,
    /// Also publish and subscribe outside `warren/`, as on a local mosquitto.
    Bus,
}

/// `[broker]`, for both modes; `validate` checks that the keys fit the mode.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    /// `embedded` or `external`.
    #[serde(default)]
    pub mode: BrokerMode,
    /// Embedded: the TLS listener for edges.
    pub listen_tls: Option<SocketAddr>,
    /// Embedded: an optional plain listener for local tools; must be a loopback address.
    pub listen_local: Option<SocketAddr>,
    /// Embedded: the server certificate (PEM).
    pub cert_file: Option<PathBuf>,
    /// Embedded: its key; external: this hub's client key.
    pub key_file: Option<PathBuf>,
    /// Embedded: require client certificates signed by this CA (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// Embedded: require client certificates that this revocation list (`hub pki revoke`)
    /// does not name; re-read when it changes.
    pub crl_file: Option<PathBuf>,
    /// Embedded: MQTT users, as `mosquitto_passwd` writes them; without it no password is asked.
    pub users_file: Option<PathBuf>,
    /// Embedded: let TLS clients in with neither client certificate nor password.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Embedded: what `listen_local` clients may do.
    #[serde(default)]
    pub local_access: LocalAccess,
    /// Embedded: most simultaneous connections.
    pub max_connections: Option<usize>,
    /// Embedded: a client that has not finished its TLS handshake by then is dropped.
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    /// External: `host:port`.
    pub address: Option<String>,
    /// External: TLS (default true).
    pub tls: Option<bool>,
    /// External: CA of the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// External: client certificate (with `key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// External: username.
    pub username: Option<String>,
    /// External: password file.
    pub password_file: Option<PathBuf>,
    /// External: MQTT client id (default `warren-hub-<hostname>`).
    pub client_id: Option<String>,
    /// External: shared-subscription group, so several hubs split the events.
    pub share_group: Option<String>,
}

/// Which store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// The hub's own, embedded (redb in `state_dir`), for one hub; `sled`, its engine until
    /// 2026-11-28, is read as this.
    #[default]
    #[serde(alias = "sled")]
    Embedded,
    /// PostgreSQL, for hubs that share their state.
    Postgres,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `embedded` or `postgres`.
    #[serde(default)]
    pub kind: StoreKind,
    /// PostgreSQL: a file holding the connection string (it may hold a password).
    pub url_file: Option<PathBuf>,
    /// PostgreSQL: connections kept.
    pub pool_size: Option<usize>,
    /// PostgreSQL: how long a delivery a hub has claimed stays its own if that hub stops
    /// renewing the claim (it died): then another hub delivers it.
    #[serde(default, with = "humantime_serde")]
    pub lease: Option<Duration>,
    /// PostgreSQL: this hub's name among those sharing the store (default: the host name).
    pub name: Option<String>,
}

/// `[store] kind = "postgres"`, validated.
#[derive(Debug, Clone)]
pub struct SharedStore {
    /// The file with the connection string.
    pub url_file: PathBuf,
    /// Connections kept.
    pub pool_size: usize,
    /// A claim's lease.
    pub lease: Duration,
    /// This hub's name.
    pub name: String,
}

impl RawStore {
    fn validate(
        self,
        broker: &Broker,
        delivery: &DeliveryConfig,
    ) -> Result<Option<SharedStore>, (&'static str, String)> {
        if self.kind == StoreKind::Embedded {
            for (set, key) in [
                (self.url_file.is_some(), "store.url_file"),
                (self.pool_size.is_some(), "store.pool_size"),
                (self.lease.is_some(), "store.lease"),
                (self.name.is_some(), "store.name"),
            ] {
                if set {
                    return Err((key, "is only for kind = \"postgres\"".to_owned()));
                }
            }
            return Ok(None);
        }
        let Some(url_file) = self.url_file else {
            return Err((
                "store.url_file",
                "is required with kind = \"postgres\" (a file holding the connection string)"
                    .to_owned(),
            ));
        };
        if !matches!(broker, Broker::External(_)) {
            return Err((
                "store.kind",
                "\"postgres\" needs [broker] mode = \"external\": hubs that share a store must \
                 share a broker, so that each sees every edge's presence"
                    .to_owned(),
            ));
        }
        let pool_size = self.pool_size.unwrap_or(8);
        if pool_size == 0 {
            return Err(("store.pool_size", "must be at least 1".to_owned()));
        }
        // Longer than an attempt, or a slow delivery would be taken over while it runs.
        let lease = self
            .lease
            .unwrap_or(delivery.timeout * 3 + Duration::from_secs(30));
        if lease <= delivery.timeout * 2 {
            return Err((
                "store.lease",
                format!(
                    "must be longer than twice [delivery] timeout ({}): a claim must outlast \
                     an attempt and its record",
                    humantime::format_duration(delivery.timeout)
                ),
            ));
        }
        let name = self
            .name
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err((
                "store.name",
                "must be 1 to 128 characters, none of them control characters".to_owned(),
            ));
        }
        Ok(Some(SharedStore {
            url_file,
            pool_size,
            lease,
            name,
        }))
    }
}

/// `[dedup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// How long an event id is remembered.
    #[serde(default = "default_dedup_window", with = "humantime_serde")]
    pub window: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window: default_dedup_window(),
        }
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How long a failing delivery is retried, from its first failure, before it becomes a
    /// dead letter: long enough to outlast an internet link down for the night.
    #[serde(default = "default_give_up_after", with = "humantime_serde")]
    pub give_up_after: Duration,
    /// First retry delay.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest retry delay.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// One attempt's time limit (HTTP request, program run).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long dead letters are kept for `hub dead-letters retry`.
    #[serde(default = "default_keep_dead_letters", with = "humantime_serde")]
    pub keep_dead_letters: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            give_up_after: default_give_up_after(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
            keep_dead_letters: default_keep_dead_letters(),
        }
    }
}

/// `[notifier.NAME]`: its `type` and that type's keys, plus the keys every notifier has.
///
/// Read through a table because serde cannot both flatten the type's keys in and still
/// refuse unknown ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct NotifierSpec {
    /// The notifier that gets a delivery this one gives up on.
    pub fallback: Option<NotifierName>,
    /// The type and its keys.
    pub config: NotifierConfig,
}

impl TryFrom<toml::Table> for NotifierSpec {
    type Error = String;

    fn try_from(mut t: toml::Table) -> Result<Self, String> {
        let fallback = match t.remove("fallback") {
            None => None,
            Some(toml::Value::String(s)) => Some(NotifierName::try_from(s)?),
            Some(other) => {
                return Err(format!(
                    "`fallback` must be a notifier name, not a {}",
                    other.type_str()
                ));
            }
        };
        let config =
            NotifierConfig::deserialize(toml::Value::Table(t)).map_err(|e| e.to_string())?;
        Ok(Self { fallback, config })
    }
}

/// `[legacy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// Republish each new login in the hared format on the hub's own broker.
    #[serde(default)]
    pub republish: bool,
    /// On this topic.
    #[serde(default = "default_legacy_topic")]
    pub topic: String,
    /// `[legacy.external]`: republish them on another broker too — the mosquitto an
    /// existing mqttwarn reads. The connection keys of an `mqtt` notifier (and `fallback`);
    /// it becomes the notifier [`LEGACY_NOTIFIER`], so each publish is durable and retried.
    pub external: Option<toml::Table>,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            republish: false,
            topic: default_legacy_topic(),
            external: None,
        }
    }
}

/// The notifier that `[legacy.external]` becomes.
pub const LEGACY_NOTIFIER: &str = "legacy";

impl LegacyConfig {
    /// The notifier and the route (every new login, tests aside) that `[legacy.external]`
    /// stands for.
    fn external_delivery(&self) -> Result<Option<(NotifierSpec, RouteConfig)>, String> {
        let Some(table) = &self.external else {
            return Ok(None);
        };
        let mut table = table.clone();
        // What it publishes is fixed: hared's format on [legacy] topic, at QoS 1 (done at
        // the broker's PUBACK, so retried until then), never retained (mqttwarn would notify
        // the last login again each time it reconnects).
        for key in [
            "type",
            "broker",
            "topic",
            "payload",
            "payload_format",
            "qos",
            "retain",
        ] {
            if table.contains_key(key) {
                return Err(format!(
                    "`{key}` is not for [legacy.external]: it publishes each login once, at QoS 1, on [legacy] topic, in hared's format"
                ));
            }
        }
        for (key, value) in [
            ("type", "mqtt"),
            ("topic", self.topic.as_str()),
            ("payload_format", "hared"),
        ] {
            table.insert(key.into(), toml::Value::String(value.into()));
        }
        let spec = NotifierSpec::try_from(table)?;
        let notify = vec![NotifierName::try_from(LEGACY_NOTIFIER.to_owned())?];
        let route = RouteConfig {
            matches: ConditionsConfig {
                kind: Some(OneOrMany::One("login".into())),
                ..ConditionsConfig::default()
            },
            // A test event also matches `kind = "login"`; mqttwarn must not take it for one.
            unless: Some(ConditionsConfig {
                kind: Some(OneOrMany::One("test".into())),
                ..ConditionsConfig::default()
            }),
            notify,
            title: None,
            format: None,
            priority: None,
            throttle: None,
        };
        Ok(Some((spec, route)))
    }
}

/// `[presence]`: which edges are reporting ([`crate::presence`]); with `events`, an edge
/// that goes offline or comes back becomes an event of kind `edge_offline` / `edge_online`,
/// routed like any other: "the power has gone off at paris-dc".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// Turn presence changes into events.
    #[serde(default)]
    pub events: bool,
    /// An edge not heard from for this long is offline: no presence refresh (edges send one
    /// every `status_interval`, 1 min by default) and no event.
    #[serde(default = "default_silent_after", with = "humantime_serde")]
    pub silent_after: Duration,
    /// A change is announced once it has lasted this long: a reconnect or a flapping link
    /// makes no alert per blip.
    #[serde(default = "default_presence_grace", with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            events: false,
            silent_after: default_silent_after(),
            grace: default_presence_grace(),
        }
    }
}

/// `[metrics]`, from before the page: `/metrics` alone. `[web]` serves it too.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus text on `http://<listen>/metrics`.
    pub listen: Option<SocketAddr>,
}

/// The broker section, validated.
#[derive(Debug, Clone)]
pub enum Broker {
    /// Embedded rumqttd behind the hub's TLS front.
    Embedded(EmbeddedBroker),
    /// A client of another broker.
    External(ExternalBroker),
}

/// `[broker]` in `mode = "embedded"`.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// The TLS listener for edges.
    pub listen_tls: Option<TlsListener>,
    /// Plain loopback listener for local tools.
    pub listen_local: Option<SocketAddr>,
    /// MQTT users.
    pub users_file: Option<PathBuf>,
    /// TLS clients may connect with neither certificate nor password.
    pub allow_anonymous: bool,
    /// What local tools may do.
    pub local_access: LocalAccess,
    /// Connection cap.
    pub max_connections: usize,
    /// TLS handshake deadline.
    pub handshake_timeout: Duration,
}

/// `listen_tls` and the files only it uses.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Where.
    pub addr: SocketAddr,
    /// Server certificate (PEM).
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    /// CA for client certificates (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// Revoked client certificates.
    pub crl_file: Option<PathBuf>,
}

/// `[broker]` in `mode = "external"`.
#[derive(Debug, Clone)]
pub struct ExternalBroker {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS, unless `tls = false`.
    pub tls: Option<ExternalTls>,
    /// Username.
    pub username: Option<String>,
    /// Password file.
    pub password_file: Option<PathBuf>,
    /// Client id.
    pub client_id: String,
    /// Shared-subscription group.
    pub share_group: String,
}

/// TLS to an external broker.
#[derive(Debug, Clone)]
pub struct ExternalTls {
    /// The broker's CA.
    pub ca_file: PathBuf,
    /// Client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where it came from.
    pub path: PathBuf,
    /// Inbox directory.
    pub inbox_dir: PathBuf,
    /// Space kept beside the inbox for a full disk.
    pub reserve_bytes: u64,
    /// Status socket.
    pub status_socket: PathBuf,
    /// SIGTERM grace.
    pub shutdown_grace: Duration,
    /// Broker.
    pub broker: Broker,
    /// The store shared with other hubs; `None`: the hub's own in `inbox_dir`.
    pub store: Option<SharedStore>,
    /// Dedup.
    pub dedup: DedupConfig,
    /// Delivery.
    pub delivery: DeliveryConfig,
    /// Legacy republish.
    pub legacy: LegacyConfig,
    /// Presence events.
    pub presence: PresenceConfig,
    /// Known sources.
    pub known_sources: KnownSourcesConfig,
    /// The page, `/api/v1` and `/metrics` (or `/metrics` alone), if served.
    pub web: Option<Web>,
    /// Notifiers.
    pub notifiers: BTreeMap<NotifierName, NotifierSpec>,
    /// Routes.
    pub routes: Vec<Route>,
}

impl HubConfig {
    /// Reads, parses and validates `path`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, and line and key where known.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &warren_daemon::config::read(path)?)
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    /// See [`HubConfig::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        warren_daemon::config::parse::<RawHubConfig>(path, text)?.validate(path)
    }
}

impl RawHubConfig {
    /// Checks values and resolves defaults; no I/O.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first value that cannot work.
    pub fn validate(self, path: &Path) -> Result<HubConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::invalid(path, key, reason);
        let broker = self.broker.validate().map_err(|(k, r)| invalid(k, &r))?;
        let (mut notifiers, mut route_configs) = (self.notifiers, self.routes);
        if let Some((spec, route)) = self
            .legacy
            .external_delivery()
            .map_err(|r| invalid("legacy.external", &r))?
        {
            if notifiers.contains_key(&route.notify[0]) {
                return Err(invalid(
                    &format!("notifier.{LEGACY_NOTIFIER}"),
                    "the name is taken by [legacy.external]",
                ));
            }
            notifiers.insert(route.notify[0].clone(), spec);
            route_configs.push(route);
        }
        if route_configs.is_empty() {
            return Err(invalid(
                "route",
                "at least one [[route]] is needed, or nothing is ever notified",
            ));
        }
        let mut routes = Vec::with_capacity(route_configs.len());
        for (i, r) in route_configs.into_iter().enumerate() {
            routes.push(
                r.validate(&notifiers)
                    .map_err(|(k, reason)| invalid(&format!("route[{i}].{k}"), &reason))?,
            );
        }
        for (name, spec) in &notifiers {
            if let Some(to) = &spec.fallback {
                if to == name {
                    return Err(invalid(
                        &format!("notifier.{name}.fallback"),
                        "names the notifier itself",
                    ));
                }
                if !notifiers.contains_key(to) {
                    return Err(invalid(
                        &format!("notifier.{name}.fallback"),
                        &format!("no notifier named `{to}`"),
                    ));
                }
            }
            let is_fallback = notifiers
                .values()
                .any(|s| s.fallback.as_ref() == Some(name));
            if !is_fallback && !routes.iter().any(|r| r.notify.contains(name)) {
                tracing::warn!(notifier = %name, "Notifier is not used by any route.");
            }
        }
        self.known_sources
            .validate()
            .map_err(|(k, r)| invalid(k, &r))?;
        if self.delivery.give_up_after.is_zero() {
            return Err(invalid("delivery.give_up_after", "must be more than 0"));
        }
        let republished = self.legacy.republish || self.legacy.external.is_some();
        if republished && warren_proto::topic::parse_event(&self.legacy.topic).is_some() {
            return Err(invalid("legacy.topic", "must not be a warren event topic"));
        }
        let web = self
            .web
            .validate(self.metrics.listen, &broker)
            .map_err(|(k, r)| invalid(k, &r))?;
        let store = self
            .store
            .validate(&broker, &self.delivery)
            .map_err(|(k, r)| invalid(k, &r))?;
        let state_dir = self.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        Ok(HubConfig {
            path: path.to_owned(),
            status_socket: self
                .status_socket
                .unwrap_or_else(|| state_dir.join("hub.sock")),
            inbox_dir: state_dir.join("inbox"),
            reserve_bytes: self.reserve_bytes,
            shutdown_grace: self.shutdown_grace,
            broker,
            store,
            dedup: self.dedup,
            delivery: self.delivery,
            legacy: self.legacy,
            presence: self.presence,
            known_sources: self.known_sources,
            web,
            notifiers,
            routes,
        })
    }
}

impl RawBroker {
    fn validate(self) -> Result<Broker, (&'static str, String)> {
        let err = |k, r: &str| Err((k, r.to_owned()));
        match self.mode {
            BrokerMode::Embedded => {
                for (set, key) in [
                    (self.address.is_some(), "broker.address"),
                    (self.tls.is_some(), "broker.tls"),
                    (self.ca_file.is_some(), "broker.ca_file"),
                    (self.client_cert_file.is_some(), "broker.client_cert_file"),
                    (self.username.is_some(), "broker.username"),
                    (self.password_file.is_some(), "broker.password_file"),
                    (self.client_id.is_some(), "broker.client_id"),
                    (self.share_group.is_some(), "broker.share_group"),
                ] {
                    if set {
                        return err(key, "is only for mode = \"external\"");
                    }
                }
                if self.listen_tls.is_none() && self.listen_local.is_none() {
                    return err(
                        "broker.listen_tls",
                        "is needed (or listen_local), or no edge can connect",
                    );
                }
                if self.listen_local.is_some_and(|a| !a.ip().is_loopback()) {
                    return err(
                        "broker.listen_local",
                        "must be a loopback address: it has no TLS",
                    );
                }
                // Files only the TLS listener reads are refused without it: check-config
                // would otherwise pass files that nothing ever opens.
                let listen_tls = match (self.listen_tls, self.cert_file, self.key_file) {
                    (Some(addr), Some(cert_file), Some(key_file)) => {
                        let open = self.client_ca_file.is_none() && self.users_file.is_none();
                        if open && !self.allow_anonymous {
                            return err(
                                "broker.listen_tls",
                                "would let anyone in: set client_ca_file or users_file (or allow_anonymous = true)",
                            );
                        }
                        if !open && self.allow_anonymous {
                            return err(
                                "broker.allow_anonymous",
                                "is only for a listen_tls without client_ca_file and users_file",
                            );
                        }
                        if self.crl_file.is_some() && self.client_ca_file.is_none() {
                            return err("broker.crl_file", "is only used with client_ca_file");
                        }
                        Some(TlsListener {
                            addr,
                            cert_file,
                            key_file,
                            client_ca_file: self.client_ca_file,
                            crl_file: self.crl_file,
                        })
                    }
                    (Some(_), _, _) => {
                        return err(
                            "broker.cert_file",
                            "and broker.key_file are required with listen_tls",
                        );
                    }
                    (None, cert, key) => {
                        for (set, key) in [
                            (cert.is_some(), "broker.cert_file"),
                            (key.is_some(), "broker.key_file"),
                            (self.client_ca_file.is_some(), "broker.client_ca_file"),
                            (self.crl_file.is_some(), "broker.crl_file"),
                            (self.allow_anonymous, "broker.allow_anonymous"),
                        ] {
                            if set {
                                return err(key, "is only used with listen_tls");
                            }
                        }
                        None
                    }
                };
                Ok(Broker::Embedded(EmbeddedBroker {
                    listen_tls,
                    listen_local: self.listen_local,
                    users_file: self.users_file,
                    allow_anonymous: self.allow_anonymous,
                    local_access: self.local_access,
                    max_connections: self.max_connections.unwrap_or(10_000),
                    handshake_timeout: self.handshake_timeout.unwrap_or(Duration::from_secs(10)),
                }))
            }
            BrokerMode::External => {
                for (set, key) in [
                    (self.listen_tls.is_some(), "broker.listen_tls"),
                    (self.listen_local.is_some(), "broker.listen_local"),
                    (self.cert_file.is_some(), "broker.cert_file"),
                    (self.client_ca_file.is_some(), "broker.client_ca_file"),
                    (self.crl_file.is_some(), "broker.crl_file"),
                    (self.users_file.is_some(), "broker.users_file"),
                    (self.allow_anonymous, "broker.allow_anonymous"),
                    (
                        self.local_access != LocalAccess::Read,
                        "broker.local_access",
                    ),
                ] {
                    if set {
                        return err(key, "is only for mode = \"embedded\"");
                    }
                }
                let Some((host, port)) = self.address.as_deref().and_then(host_port) else {
                    return err("broker.address", "must be host:port");
                };
                let client_cert = match (self.client_cert_file, self.key_file) {
                    (Some(c), Some(k)) => Some((c, k)),
                    (None, None) => None,
                    _ => return err("broker.client_cert_file", "and broker.key_file go together"),
                };
                let tls = match (self.tls.unwrap_or(true), self.ca_file) {
                    (true, Some(ca_file)) => Some(ExternalTls {
                        ca_file,
                        client_cert,
                    }),
                    (true, None) => return err("broker.ca_file", "is required with TLS"),
                    (false, ca_file) => {
                        for (set, key) in [
                            (ca_file.is_some(), "broker.ca_file"),
                            (client_cert.is_some(), "broker.client_cert_file"),
                        ] {
                            if set {
                                return err(key, "is only used with TLS (tls = false is set)");
                            }
                        }
                        None
                    }
                };
                if self.password_file.is_some() && self.username.is_none() {
                    return err("broker.password_file", "needs broker.username");
                }
                let client_id = self
                    .client_id
                    .unwrap_or_else(|| format!("warren-hub-{}", warren_daemon::short_hostname()));
                Ok(Broker::External(ExternalBroker {
                    host,
                    port,
                    tls,
                    username: self.username,
                    password_file: self.password_file,
                    client_id,
                    share_group: self.share_group.unwrap_or_else(|| "warren-hub".to_owned()),
                }))
            }
        }
    }
}

/// `host:port` or `[v6]:port` as a host and a port.
pub fn host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port.parse().ok()?,
    ))
}

fn default_reserve_bytes() -> u64 {
    16 << 20
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_dedup_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_silent_after() -> Duration {
    Duration::from_secs(180)
}
fn default_presence_grace() -> Duration {
    Duration::from_secs(60)
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_keep_dead_letters() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_legacy_topic() -> String {
    warren_proto::topic::LEGACY.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `*.toml` files of `tests/fixtures/<kind>`, at least one.
    fn fixtures(kind: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(kind);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no fixtures in {}", dir.display());
        files
    }

    #[test]
    fn valid_fixtures_validate() {
        for path in fixtures("valid") {
            if let Err(e) = HubConfig::load(&path) {
                panic!("{e}");
            }
        }
    }

    /// The README's example hub config, as a user would copy it.
    #[test]
    fn the_readme_example_validates() {
        let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let text = std::fs::read_to_string(&readme).unwrap();
        let example = text
            .split("```toml\n")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .find(|block| block.contains("[broker]"))
            .expect("a ```toml block with [broker] in README.md");
        if let Err(e) = HubConfig::parse(&readme, example) {
            panic!("{e}");
        }
    }

    #[test]
    fn a_shared_store_needs_its_connection_a_shared_broker_and_a_long_lease() {
        let external = "[broker]\nmode = \"external\"\naddress = \"m:1883\"\ntls = false\n\
                        [notifier.x]\ntype = \"log\"\n[[route]]\nnotify = [\"x\"]\n";
        let parse = |text: &str| HubConfig::parse(Path::new("hub.toml"), text);
        let cfg = parse(&format!(
            "{external}[store]\nkind = \"postgres\"\nurl_file = \"/etc/warren/store.url\"\nname = \"a\"\n"
        ))
        .unwrap();
        let store = cfg.store.unwrap();
        assert_eq!(store.name, "a");
        assert_eq!(store.pool_size, 8);
        assert_eq!(store.lease, Duration::from_secs(60), "3 × timeout + 30 s");
        assert!(
            parse(external).unwrap().store.is_none(),
            "embedded by default"
        );
        for kind in ["embedded", "sled"] {
            let text = format!("{external}[store]\nkind = \"{kind}\"\n");
            assert!(parse(&text).unwrap().store.is_none(), "{kind}: embedded");
        }
        for (extra, says) in [
            ("[store]\nkind = \"postgres\"\n", "store.url_file"),
            ("[store]\nurl_file = \"/x\"\n", "only for kind"),
            (
                "[store]\nkind = \"postgres\"\nurl_file = \"/x\"\nlease = \"20s\"\n",
                "twice [delivery] timeout",
            ),
        ] {
            let e = parse(&format!("{external}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
        let embedded = "[broker]\nlisten_local = \"127.0.0.1:1883\"\n\
                        [notifier.x]\ntype = \"log\"\n[[route]]\nnotify = [\"x\"]\n\
                        [store]\nkind = \"postgres\"\nurl_file = \"/x\"\n";
        let e = parse(embedded).unwrap_err().to_string();
        assert!(e.contains("mode = \"external\""), "{e}");
    }

    #[test]
    fn legacy_external_is_a_durable_notifier_fed_every_login() {
        let path = Path::new("hub.toml");
        let cfg = HubConfig::parse(
            path,
            "[broker]\nlisten_local = \"127.0.0.1:1883\"\n\
             [legacy]\ntopic = \"classic/logins\"\n\
             [legacy.external]\naddress = \"m:1883\"\ntls = false\nfallback = \"x\"\n\
             [notifier.x]\ntype = \"log\"\n[[route]]\nnotify = [\"x\"]\n",
        )
        .unwrap();
        let spec = &cfg.notifiers[&spec_name()];
        assert_eq!(
            spec.fallback.as_ref().map(ToString::to_string),
            Some("x".into())
        );
        let NotifierConfig::Mqtt(m) = &spec.config else {
            panic!("{spec:?}");
        };
        assert_eq!(m.topic, "classic/logins");
        assert_eq!(m.address.as_deref(), Some("m:1883"));
        assert_eq!(
            m.payload_format,
            Some(crate::notify::mqtt::PayloadFormat::Hared)
        );
        // Appended: the user's routes keep their numbers.
        assert_eq!(cfg.routes.len(), 2);
        assert_eq!(cfg.routes[1].notify, [spec_name()]);
        assert!(
            !cfg.legacy.republish,
            "the hub's own broker is a separate choice"
        );
    }

    fn spec_name() -> NotifierName {
        NotifierName::try_from(LEGACY_NOTIFIER.to_owned()).unwrap()
    }

    /// Each invalid fixture starts with `# error: <what the message must contain>`.
    #[test]
    fn invalid_fixtures_fail_naming_file_and_reason() {
        for path in fixtures("invalid") {
            let text = std::fs::read_to_string(&path).unwrap();
            let expected = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# error: "))
                .unwrap_or_else(|| panic!("{}: no `# error:` line", path.display()));
            let err = HubConfig::load(&path).map(|_| ()).unwrap_err().to_string();
            assert!(
                err.starts_with(&path.display().to_string()) && err.contains(expected),
                "{}: expected {expected:?} in: {err}",
                path.display()
            );
        }
    }
}
