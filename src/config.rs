//! Configuration: built-in defaults, then an optional TOML file, then `PRESENCE_*` environment
//! variables, then command-line flags. Each layer is a flat TOML table merged over the one below,
//! and the result is deserialized and validated once.
//!
//! Loading is a pure function of its inputs (file text, environment pairs, flag pairs) so tests
//! never touch the process environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// The documented sample configuration; also the built-in defaults.
pub const DEFAULTS: &str = include_str!("../presence.sample.toml");

/// Largest `data` an AppServer may attach to a SimplePush update (section 8 of the reference).
pub const MAX_UPDATE_DATA: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Who may create a local account on the sign-up page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    /// Anyone.
    Open,
    /// Nobody: the operator adds accounts (`presence account add`) or uses an identity provider.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// Survives a crash of the process (kill -9); the last commits may be lost on power loss.
    Normal,
    /// Every commit is fsynced: also survives power loss, at the cost of one fsync per write.
    Full,
}

/// Everything `presence serve` can be told. Field names are the TOML keys; the environment
/// variable for a key is `PRESENCE_` + the key in upper case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `PRESENCE_*` environment variables that name no setting: ignored (an orchestrator may set
    /// some, as Kubernetes sets `PRESENCE_PORT` for a service named `presence`), and logged once
    /// at start. Unknown keys in the file or the flags are refused instead.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
    pub listen: SocketAddr,
    pub admin_listen: String,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty means `sqlite://<data_dir>/presence.db`.
    #[serde(default)]
    pub database_url: String,
    pub postgres_max_connections: u32,
    /// `nats://…` for a cluster; empty keeps signals in the process.
    #[serde(default)]
    pub bus_url: String,
    pub bus_subject: String,
    /// A token the NATS server requires; empty for none.
    #[serde(default)]
    pub bus_token: SecretString,
    /// A NATS `.creds` file to sign in with; empty for none.
    #[serde(default)]
    pub bus_credentials_file: PathBuf,
    /// PEM certificates of the NATS servers' authorities; empty: the system's. Requires TLS.
    #[serde(default)]
    pub bus_tls_ca_file: PathBuf,
    #[serde(with = "humantime_serde")]
    pub node_lease: Duration,
    /// Base of push endpoint URLs; empty means `http://<bound address>`.
    #[serde(default)]
    pub public_url: String,
    /// 32 bytes, base64, sealing endpoint tokens; empty means a key kept in `<data_dir>/secret.key`.
    #[serde(default)]
    pub secret_key: SecretString,
    pub log_format: LogFormat,
    pub sqlite_synchronous: SqliteSync,

    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_min_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub ws_ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub ws_pong_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ws_write_timeout: Duration,
    pub device_writes_per_second: u32,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    pub max_connections: u32,

    pub max_message_size: usize,
    pub socket_send_buffer: usize,
    pub ws_read_buffer: usize,
    pub ws_write_buffer_max: usize,
    pub outbound_queue: usize,
    pub max_channels_per_uaid: u32,
    pub max_stored_per_uaid: u32,
    pub max_update_body: usize,

    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub presence_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    #[serde(with = "humantime_serde")]
    pub status_min_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub presence_commit_window: Duration,
    #[serde(with = "humantime_serde")]
    pub presence_store_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub grant_code_ttl: Duration,
    pub login_attempts_per_minute: u32,
    pub login_attempts_per_minute_per_address: u32,
    pub trusted_proxies: String,
    pub signup: Signup,
    pub password_hashes_at_once: u32,
    pub max_devices_per_account: u32,
    pub max_json_body: usize,
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
    #[serde(with = "humantime_serde")]
    pub uaid_expiry: Duration,
    #[serde(with = "humantime_serde")]
    pub notification_retention: Duration,
    #[serde(with = "humantime_serde")]
    pub stream_heartbeat: Duration,
    pub stream_buffer: usize,
    #[serde(with = "humantime_serde")]
    pub webhook_batch_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub webhook_disable_after: Duration,
    pub webhook_max_batch: u32,
    pub webhook_allow: String,
    pub notification_max_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub notification_max_ttl: Duration,
    pub notify_app_per_minute: u32,
    pub notify_user_per_minute: u32,
    pub max_notifications_per_device: u32,
    pub oidc_issuer: String,
    pub oidc_audience: String,
    #[serde(with = "humantime_serde")]
    pub oidc_keys_refresh: Duration,
    #[serde(default)]
    pub oidc_client_secret: SecretString,
    pub oidc_provider_name: String,
}

impl Config {
    /// Where the admin listener (`/metrics`, `/healthz`, `/livez`) binds, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listen.trim().parse().ok()
    }

    /// What the browser sign-in button calls the identity provider: `oidc_provider_name`, or
    /// else the issuer's host name.
    pub fn oidc_provider(&self) -> String {
        if !self.oidc_provider_name.trim().is_empty() {
            return self.oidc_provider_name.trim().to_owned();
        }
        url::Url::parse(&self.oidc_issuer)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| "your identity provider".to_owned())
    }

    /// Merges the layers and validates the result.
    ///
    /// `file` is the path and text of the `--config` file, `env` every environment pair (only
    /// `PRESENCE_*` ones are read), `flags` the `key = value` pairs given on the command line.
    pub fn load<'a>(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = DEFAULTS.parse().expect("the sample configuration parses");
        if let Some((path, text)) = file {
            let layer: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.message().to_owned(),
            })?;
            for (key, value) in layer {
                known_key(&table, &key, &format!("in {}", path.display()))?;
                table.insert(key, value);
            }
        }
        let mut ignored_env = Vec::new();
        for (name, value) in env {
            let Some(key) = name.strip_prefix("PRESENCE_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !table.contains_key(&key) {
                ignored_env.push(name);
                continue;
            }
            table.insert(key.clone(), typed_like(&table[&key], value));
        }
        ignored_env.sort();
        for (key, value) in flags {
            known_key(&table, key, "(flag)")?;
            table.insert(key.to_owned(), typed_like(&table[key], value));
        }
        let config: Config = toml::Value::Table(table.clone()).try_into().map_err(|e: toml::de::Error| {
            let message = e.message().trim().to_owned();
            // Name the setting: the first one that alone makes the defaults fail.
            let defaults: toml::Table = DEFAULTS.parse().expect("the sample configuration parses");
            let culprit = table.iter().find(|(key, value)| {
                let mut alone = defaults.clone();
                alone.insert((*key).clone(), (*value).clone());
                toml::Value::Table(alone).try_into::<Config>().is_err()
            });
            ConfigError::Invalid(match culprit {
                Some((key, _)) => format!("{key}: {message}"),
                None => message,
            })
        })?;
        config.validate()?;
        Ok(Config { ignored_env, ..config })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |s: String| Err(ConfigError::Invalid(s));
        if self.password_hashes_at_once == 0 {
            return invalid("password_hashes_at_once must be at least 1".into());
        }
        let postgres =
            self.database_url.starts_with("postgres://") || self.database_url.starts_with("postgresql://");
        if !self.database_url.is_empty() && !self.database_url.starts_with("sqlite:") && !postgres {
            return invalid(format!(
                "database_url must start with sqlite: or postgres://, not {:?}",
                redact_url(&self.database_url)
            ));
        }
        if self.postgres_max_connections == 0 {
            return invalid("postgres_max_connections must be at least 1".into());
        }
        if !self.bus_url.is_empty() {
            let servers = parse_bus_urls(&self.bus_url).map_err(ConfigError::Invalid)?;
            let url_login = servers.login.is_some();
            let token = !self.bus_token.expose_secret().is_empty();
            let creds = !self.bus_credentials_file.as_os_str().is_empty();
            if [url_login, token, creds].into_iter().filter(|set| *set).count() > 1 {
                return invalid(
                    "bus_url: sign in to NATS one way: a user and password in the URL, bus_token, or \
                     bus_credentials_file"
                        .into(),
                );
            }
        }
        if !self.bus_url.is_empty() && !postgres {
            return invalid(
                "bus_url: a cluster needs a shared database; set database_url to postgres://…".into(),
            );
        }
        if self.node_lease < Duration::from_secs(3) {
            return invalid("node_lease must be at least 3s".into());
        }
        if !self.public_url.is_empty() {
            match Url::parse(&self.public_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => {
                    return invalid(format!(
                        "public_url must be an absolute http(s) URL, not {:?}",
                        self.public_url
                    ))
                }
            }
        }
        if !self.secret_key.expose_secret().is_empty() && decode_key(&self.secret_key).is_none() {
            return invalid("secret_key must be 32 bytes in base64".into());
        }
        for (name, value) in [
            ("hello_timeout", self.hello_timeout),
            ("ws_ping_interval", self.ws_ping_interval),
            ("ws_pong_timeout", self.ws_pong_timeout),
            ("http_header_timeout", self.http_header_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
            ("oidc_keys_refresh", self.oidc_keys_refresh),
        ] {
            if value.is_zero() {
                return invalid(format!("{name} must be longer than zero"));
            }
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1".into());
        }
        if self.max_message_size < 1024 || self.max_message_size > 64 << 20 {
            return invalid("max_message_size must be between 1024 bytes and 64 MiB".into());
        }
        if self.ws_read_buffer < 256 || self.ws_read_buffer > 1 << 20 {
            return invalid("ws_read_buffer must be between 256 bytes and 1 MiB".into());
        }
        if self.ws_write_buffer_max < self.max_message_size || self.ws_write_buffer_max > 256 << 20 {
            return invalid(
                "ws_write_buffer_max must be at least max_message_size and at most 256 MiB".into(),
            );
        }
        if self.outbound_queue == 0 {
            return invalid("outbound_queue must be at least 1".into());
        }
        if self.max_channels_per_uaid == 0 || self.max_stored_per_uaid == 0 {
            return invalid("max_channels_per_uaid and max_stored_per_uaid must be at least 1".into());
        }
        if self.uaid_expiry < Duration::from_secs(1) {
            return invalid("uaid_expiry must be at least one second".into());
        }
        if self.token_ttl < Duration::from_secs(1) || self.stale_after < Duration::from_secs(1) {
            return invalid("token_ttl and stale_after must be at least one second".into());
        }
        if self.grant_code_ttl < Duration::from_secs(1) || self.grant_code_ttl > Duration::from_secs(600) {
            return invalid("grant_code_ttl must be between 1s and 10m".into());
        }
        if self.webhook_batch_interval < Duration::from_secs(1) {
            return invalid("webhook_batch_interval must be at least 1s".into());
        }
        if self.webhook_timeout.is_zero() || self.stream_heartbeat.is_zero() || self.event_retention.is_zero()
        {
            return invalid(
                "webhook_timeout, stream_heartbeat and event_retention must be longer than zero".into(),
            );
        }
        if self.stream_buffer < 2 || self.webhook_max_batch == 0 {
            return invalid("stream_buffer must be at least 2 and webhook_max_batch at least 1".into());
        }
        if let Err(why) = crate::egress::parse_allow_list(&self.webhook_allow) {
            return invalid(format!("webhook_allow: {why}"));
        }
        if self.login_attempts_per_minute == 0 || self.login_attempts_per_minute_per_address == 0 {
            return invalid(
                "login_attempts_per_minute and login_attempts_per_minute_per_address must be at least 1"
                    .into(),
            );
        }
        if let Err(why) = crate::egress::parse_allow_list(&self.trusted_proxies) {
            return invalid(format!("trusted_proxies: {why}"));
        }
        if self.notify_app_per_minute == 0
            || self.notify_user_per_minute == 0
            || self.max_notifications_per_device == 0
        {
            return invalid("notification rates and max_notifications_per_device must be at least 1".into());
        }
        if !self.admin_listen.trim().is_empty() && self.admin_listen.trim().parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "admin_listen must be an address like 127.0.0.1:9090, not {:?}",
                self.admin_listen
            ));
        }
        if self.oidc_issuer.is_empty() != self.oidc_audience.is_empty() {
            return invalid("oidc_issuer and oidc_audience go together: set both or neither".into());
        }
        if !self.oidc_issuer.is_empty() && !is_secure_or_loopback(&self.oidc_issuer) {
            return invalid(format!(
                "oidc_issuer must be an https URL (http only on loopback), not {:?}",
                self.oidc_issuer
            ));
        }
        if self.max_update_body < 3 * MAX_UPDATE_DATA {
            return invalid(format!(
                "max_update_body must be at least {} bytes to carry {} bytes of form-encoded data",
                3 * MAX_UPDATE_DATA,
                MAX_UPDATE_DATA
            ));
        }
        Ok(())
    }

    /// The database URL in force: the configured one, or the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("presence.db").display())
        } else {
            self.database_url.clone()
        }
    }

    /// The configured endpoint key, if one was given.
    pub fn secret_key_bytes(&self) -> Option<[u8; 32]> {
        decode_key(&self.secret_key)
    }
}

/// `https://…`, or `http://` to a loopback address (for tests and local development).
pub fn is_secure_or_loopback(raw: &str) -> bool {
    let Ok(url) = Url::parse(raw) else { return false };
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(name))) => name == "localhost",
        _ => false,
    }
}

fn decode_key(key: &SecretString) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(key.expose_secret().trim()).ok()?;
    bytes.try_into().ok()
}

fn known_key(table: &toml::Table, key: &str, whence: &str) -> Result<(), ConfigError> {
    if table.contains_key(key) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!("unknown setting {key:?} {whence}")))
    }
}

/// Environment variables and flags are strings; give them the type of the default they replace
/// so `PRESENCE_MAX_MESSAGE_SIZE=8192` is a number and `PRESENCE_LISTEN=…` stays a string.
fn typed_like(default: &toml::Value, value: String) -> toml::Value {
    match default {
        toml::Value::Integer(_) => {
            value.trim().parse::<i64>().map(toml::Value::Integer).unwrap_or(toml::Value::String(value))
        }
        toml::Value::Boolean(_) => {
            value.trim().parse::<bool>().map(toml::Value::Boolean).unwrap_or(toml::Value::String(value))
        }
        _ => toml::Value::String(value),
    }
}

/// The NATS servers of `bus_url`, with the user and password taken out of the URLs (NATS signs
/// in to every server of a cluster the same way).
pub struct BusServers {
    /// `nats://` or `tls://` (TLS required) URLs, without user or password.
    pub urls: Vec<Url>,
    /// The user and password the URLs carried.
    pub login: Option<(String, SecretString)>,
}

/// Reads `bus_url`: comma-separated `nats://`, `tls://` or `nats+tls://` (the same as `tls://`)
/// URLs, each with an optional `user:password@`, the same for all.
pub fn parse_bus_urls(raw: &str) -> Result<BusServers, String> {
    let mut servers = BusServers { urls: Vec::new(), login: None };
    for one in raw.split(',').map(str::trim) {
        let refused =
            || format!("bus_url must be nats://host:port or tls://host:port, not {:?}", redact_bus_urls(one));
        let text = match one.strip_prefix("nats+tls://") {
            Some(rest) => format!("tls://{rest}"),
            None => one.to_owned(),
        };
        let mut url = Url::parse(&text).map_err(|_| refused())?;
        if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none_or(str::is_empty) {
            return Err(refused());
        }
        if !url.username().is_empty() {
            let user = percent_decoded(url.username());
            let password = percent_decoded(url.password().unwrap_or_default());
            match &servers.login {
                Some((known, secret)) if *known != user || secret.expose_secret() != password => {
                    return Err("bus_url: every server must carry the same user and password".into());
                }
                Some(_) => {}
                None => servers.login = Some((user, SecretString::from(password))),
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        servers.urls.push(url);
    }
    Ok(servers)
}

fn percent_decoded(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// A bus URL (or a comma-separated list of them) with any user and password replaced, for
/// messages.
pub fn redact_bus_urls(raw: &str) -> String {
    raw.split(',')
        .map(|one| match Url::parse(one.trim()) {
            Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                let _ = url.set_username("****");
                let _ = url.set_password(None);
                url.to_string()
            }
            Ok(_) => one.trim().to_owned(),
            Err(_) => "(not a URL)".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("****"));
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[(&'static str, &str)],
    ) -> Result<Config, ConfigError> {
        Config::load(
            file.map(|text| (Path::new("test.toml"), text)),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            flags.iter().map(|(k, v)| (*k, v.to_string())),
        )
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = load(None, &[], &[]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./presence-data"));
        assert_eq!(config.database_url(), "sqlite://./presence-data/presence.db");
        assert_eq!(config.ping_min_interval, Duration::from_secs(55));
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let config = load(
            Some("listen = \"127.0.0.1:9000\"\nmax_channels_per_uaid = 5\nhello_timeout = \"3s\""),
            &[("PRESENCE_MAX_CHANNELS_PER_UAID", "7"), ("HOME", "/root")],
            &[("listen", "127.0.0.1:0")],
        )
        .unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.max_channels_per_uaid, 7);
        assert_eq!(config.hello_timeout, Duration::from_secs(3));
    }

    #[test]
    fn unknown_presence_variables_in_the_environment_are_ignored_and_named() {
        let config =
            load(None, &[("PRESENCE_PORT", "tcp://10.0.0.1:80"), ("PRESENCE_LISTNE", "x")], &[]).unwrap();
        assert_eq!(config.ignored_env, ["PRESENCE_LISTNE", "PRESENCE_PORT"]);
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn unknown_and_malformed_settings_are_refused_with_one_sentence() {
        let err = load(Some("listne = \"x\""), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"listne\""), "{err}");
        let err = load(None, &[], &[("listne", "x")]).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"listne\""), "{err}");
        let err = load(None, &[], &[("listen", "not an address")]).unwrap_err().to_string();
        assert!(err.starts_with("invalid configuration: listen:"), "{err}");
        let err = load(None, &[], &[("hello_timeout", "soon")]).unwrap_err().to_string();
        assert!(err.starts_with("invalid configuration"), "{err}");
        let err = load(None, &[], &[("database_url", "mysql://x")]).unwrap_err().to_string();
        assert!(err.contains("database_url"), "{err}");
        let err = load(None, &[], &[("database_url", "mysql://u:pw@db/p")]).unwrap_err().to_string();
        assert!(!err.contains("pw"), "no password in the message: {err}");
        let err = load(None, &[], &[("bus_url", "nats://127.0.0.1:4222")]).unwrap_err().to_string();
        assert!(err.contains("needs a shared database"), "{err}");
        let err = load(None, &[], &[("database_url", "postgres://db/p"), ("bus_url", "redis://x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bus_url"), "{err}");
        let cluster =
            load(None, &[], &[("database_url", "postgres://db/p"), ("bus_url", "nats://127.0.0.1:4222")]);
        assert!(cluster.is_ok(), "{cluster:?}");
        let bus = |url: &str, extra: &[(&'static str, &str)]| {
            let mut flags = vec![("database_url", "postgres://db/p"), ("bus_url", url)];
            flags.extend_from_slice(extra);
            load(None, &[], &flags).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(bus("tls://nats.internal:4222, nats+tls://other:4222", &[]).is_ok());
        assert!(bus("nats://u:p@a:4222,nats://b:4222", &[]).is_ok());
        let err = bus("nats://u:hunter2@a:4222,nats://v:other@b:4222", &[]).unwrap_err();
        assert!(err.contains("same user") && !err.contains("hunter2"), "{err}");
        let err = bus("nats://u:hunter2@a:4222", &[("bus_token", "t0ken")]).unwrap_err();
        assert!(err.contains("one way") && !err.contains("hunter2") && !err.contains("t0ken"), "{err}");
        let err = bus("redis://u:hunter2@a:4222", &[]).unwrap_err();
        assert!(err.contains("bus_url") && !err.contains("hunter2"), "{err}");
        let err = load(Some("listen = "), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("not valid TOML"), "{err}");
        let err = load(None, &[], &[("secret_key", "c2hvcnQ=")]).unwrap_err().to_string();
        assert!(err.contains("secret_key"), "{err}");
    }

    #[test]
    fn bus_urls_lose_their_user_and_password() {
        let servers = parse_bus_urls("nats://presence:p%40ss@a:4222, nats+tls://b:4222").unwrap();
        let urls: Vec<String> = servers.urls.iter().map(Url::to_string).collect();
        assert_eq!(urls, ["nats://a:4222", "tls://b:4222"]);
        let (user, password) = servers.login.unwrap();
        assert_eq!((user.as_str(), password.expose_secret()), ("presence", "p@ss"));
        assert_eq!(redact_bus_urls("nats://u:pw@a:1,nats://b:2"), "nats://****@a:1,nats://b:2");
    }

    #[test]
    fn passwords_in_database_urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:hunter2@db/p"), "postgres://u:****@db/p");
    }
}
