//! Configuration: defaults, overridden by a TOML file, overridden by `SIDEKEY_*` environment variables,
//! overridden by flags (clap reads the last two; figment layers them over the file).
//!
//! The file's key names are the contract's (`../shared/CONTRACT.md`, "Configuration file"); every key has a
//! default, so an empty file, or none, is valid. Unknown keys are refused, so a typo fails at start-up
//! instead of silently running with a default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use poem::http::HeaderName;
use serde::{Deserialize, Deserializer, Serialize};
use sidekey_domain::SessionPolicy;
use sidekey_http::UpstreamSettings;
use sidekey_http::{CorsSettings, FailureQuota, HttpSettings};

/// A configured secret (admin token, shared secrets): `Debug` is redacted so the configuration can be
/// logged whole.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`SIDEKEY_LISTEN`).
    pub listen: String,
    /// Session lifetimes.
    pub session: SessionConfig,
    /// Where sessions live.
    pub store: StoreConfig,
    /// Where real keys come from.
    pub secrets: SecretsConfig,
    /// The bridge (read by `sidekey bridge`; by `serve` to check replies).
    pub bridge: BridgeConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Caller authentication.
    pub auth: AuthConfig,
    /// The user directory (Better Auth's tables).
    pub directory: DirectoryConfig,
    /// Proxied upstreams.
    pub upstreams: Vec<UpstreamConfig>,
    /// CORS for browser frontends.
    pub cors: CorsConfig,
    /// Logging.
    pub log: LogConfig,
    /// HTTP limits.
    pub http: HttpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            session: SessionConfig::default(),
            store: StoreConfig::default(),
            secrets: SecretsConfig::default(),
            bridge: BridgeConfig::default(),
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            directory: DirectoryConfig::default(),
            upstreams: Vec::new(),
            cors: CorsConfig::default(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// `[session]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SessionConfig {
    pub default_ttl_seconds: u64,
    pub min_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
    pub max_lifetime_seconds: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let policy = SessionPolicy::DEFAULT;
        Self {
            default_ttl_seconds: policy.default_ttl().as_secs(),
            min_ttl_seconds: 1,
            max_ttl_seconds: 86_400,
            max_lifetime_seconds: policy.max_lifetime().as_secs(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct StoreConfig {
    pub url: String,
    pub prefix: String,
    /// How long connecting to Redis may take before a request fails with 503.
    pub connect_timeout_ms: u64,
    /// How long one Redis command may take before a request fails with 503.
    pub command_timeout_ms: u64,
    /// Keep active sessions in a local cache invalidated through Redis pub/sub (off for Redis Cluster).
    pub local_cache: bool,
    /// Most sessions the local cache holds.
    pub cache_capacity: usize,
    /// Longest a session stays in the local cache without being read from Redis again.
    pub cache_max_age_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "memory".to_owned(),
            prefix: "sidekey".to_owned(),
            connect_timeout_ms: 1000,
            command_timeout_ms: 500,
            local_cache: true,
            cache_capacity: 100_000,
            cache_max_age_ms: 30_000,
        }
    }
}

/// `[secrets]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct SecretsConfig {
    /// `env`, `file:DIR`, `toml:PATH`, or a `redis://` URL: the event bus to a bridge.
    pub source: String,
    /// How long an issuance waits for the bridge.
    pub timeout_ms: u64,
    /// How many distinct requests may wait on the bridge at once (past it: 503 at once).
    pub max_pending: usize,
    /// The prefix of the bus's keys and channels in Redis.
    pub prefix: String,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            source: "env".to_owned(),
            timeout_ms: 5000,
            max_pending: sidekey_bridge::DEFAULT_MAX_PENDING,
            prefix: "sidekey".to_owned(),
        }
    }
}

/// `[bridge]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct BridgeConfig {
    /// Where `sidekey bridge` finds keys: `env`, `file:DIR` or `toml:PATH`.
    pub source: String,
    /// The shared secret that authenticates requests, replies and announcements on the bus.
    pub secret: Option<Secret>,
    /// How often the bridge reads the keys it served again to announce rotations (0: never).
    pub watch_interval_ms: u64,
    /// Requests the bridge answers at once.
    pub max_concurrent: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self { source: "env".to_owned(), secret: None, watch_interval_ms: 5000, max_concurrent: 64 }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct AdminConfig {
    pub token: Option<Secret>,
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (any caller may create sessions) or `jwt` (callers prove who they are).
    pub mode: String,
    /// The identity provider's key set (Better Auth: `<base URL>/api/auth/jwks`).
    pub jwks_url: Option<String>,
    /// A shared secret for HS256 JWTs minted by the app itself (at least 32 bytes).
    pub hs256_secret: Option<Secret>,
    /// The required `iss`, when set.
    pub issuer: Option<String>,
    /// The required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_seconds: u64,
    /// Better Auth's `BETTER_AUTH_SECRET`: accept its session cookie and bearer session tokens.
    pub better_auth_secret: Option<Secret>,
    /// The key set is fetched again after this long.
    pub jwks_max_age_seconds: u64,
    /// An unknown `kid` fetches the key set again at most this often.
    pub jwks_min_refetch_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: "none".to_owned(),
            jwks_url: None,
            hs256_secret: None,
            issuer: None,
            audience: None,
            leeway_seconds: 30,
            better_auth_secret: None,
            jwks_max_age_seconds: 300,
            jwks_min_refetch_seconds: 10,
        }
    }
}

/// `[directory]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// PostgreSQL holding Better Auth's `user` and `session` tables.
    pub url: Option<String>,
    /// The schema of those tables, when not on the default search path.
    pub schema: Option<String>,
    /// Pooled connections.
    pub pool_size: usize,
    /// The bound on connecting.
    pub connect_timeout_ms: u64,
    /// The bound on one query.
    pub query_timeout_ms: u64,
    /// The bound on how long a session outlives its deleted sign-in session: the directory is asked
    /// again about a sign-in session at most this often.
    pub cascade_check_seconds: u64,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            url: None,
            schema: None,
            pool_size: 16,
            connect_timeout_ms: 2000,
            query_timeout_ms: 1000,
            cascade_check_seconds: 10,
        }
    }
}

/// `[[upstreams]]`: one proxied upstream (validated at start-up by `sidekey_http::proxy`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name in `/v1/proxy/{name}/…`; `chatkit` also serves `/v1/chatkit/…`.
    pub name: String,
    /// `http(s)://host[:port][/base/path]`.
    pub base_url: String,
    /// Exact `secret_key_id`s or trailing-`*` patterns whose real key may be sent here.
    pub allowed_secret_key_ids: Vec<String>,
    /// The header carrying the real key [default: authorization].
    pub credential_header: Option<String>,
    /// Written before the key [default: Bearer]; `""` sends the bare key.
    pub credential_scheme: Option<String>,
    /// Send the key as this query parameter instead of a header.
    pub credential_query: Option<String>,
    /// Static headers added to every request.
    pub headers: BTreeMap<String, String>,
    /// Longest wait for a connection, TLS handshake included.
    pub connect_timeout_ms: u64,
    /// Longest wait from sending the request to the response headers.
    pub response_timeout_ms: u64,
    /// Longest silence between two chunks of the response body.
    pub idle_timeout_ms: u64,
    /// Largest request body (413 above it).
    pub max_request_body_bytes: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            base_url: String::new(),
            allowed_secret_key_ids: Vec::new(),
            credential_header: None,
            credential_scheme: None,
            credential_query: None,
            headers: BTreeMap::new(),
            connect_timeout_ms: millis(UpstreamSettings::DEFAULT_CONNECT_TIMEOUT),
            response_timeout_ms: millis(UpstreamSettings::DEFAULT_RESPONSE_TIMEOUT),
            idle_timeout_ms: millis(UpstreamSettings::DEFAULT_IDLE_TIMEOUT),
            max_request_body_bytes: UpstreamSettings::DEFAULT_MAX_REQUEST_BODY_BYTES,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl UpstreamConfig {
    /// The adapter's settings for this upstream (validated when the proxy is built).
    pub fn settings(&self) -> UpstreamSettings {
        let mut settings = UpstreamSettings::new(&self.name, &self.base_url);
        settings.allowed_secret_key_ids.clone_from(&self.allowed_secret_key_ids);
        if let Some(header) = &self.credential_header {
            settings.credential_header.clone_from(header);
        }
        if let Some(scheme) = &self.credential_scheme {
            settings.credential_scheme.clone_from(scheme);
        }
        settings.credential_query.clone_from(&self.credential_query);
        settings.headers.clone_from(&self.headers);
        settings.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        settings.response_timeout = Duration::from_millis(self.response_timeout_ms);
        settings.idle_timeout = Duration::from_millis(self.idle_timeout_ms);
        settings.max_request_body_bytes = self.max_request_body_bytes;
        settings
    }
}

/// `[cors]`: browser origins allowed on the session and proxy routes (none: CORS off).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// `scheme://host[:port]` of each frontend.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer.
    pub max_age_seconds: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self { allowed_origins: Vec::new(), max_age_seconds: CorsSettings::DEFAULT_MAX_AGE.as_secs() }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json` (`SIDEKEY_LOG_FORMAT`).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,sidekey::audit=info,poem=warn` (`SIDEKEY_LOG`).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, filter: "info".to_owned() }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest JSON request body, in bytes (default 16 KiB).
    pub body_limit_bytes: usize,
    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish.
    pub shutdown_grace_seconds: u64,
    /// Failed requests (400, 401, 413) a client address may send per second, sustained; past that and
    /// the burst, its requests get 429 until it slows down. 0 disables the limit.
    pub failed_requests_per_second: u32,
    /// Failed requests a client address may send at once.
    pub failed_requests_burst: u32,
    /// Behind a trusted reverse proxy, the header holding the client's address (`x-forwarded-for`: its
    /// last entry; `x-real-ip`). Unset: the TCP peer. Never set it when clients reach sidekey directly:
    /// they could then pick their own address.
    pub client_address_header: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 16 * 1024,
            shutdown_grace_seconds: 30,
            failed_requests_per_second: 20,
            failed_requests_burst: 100,
            client_address_header: None,
        }
    }
}

impl HttpConfig {
    /// The HTTP layer's settings.
    ///
    /// # Errors
    /// When `client_address_header` is not a header name, or the burst is 0 with a rate set.
    pub fn settings(&self) -> anyhow::Result<HttpSettings> {
        let failure_quota = match NonZeroU32::new(self.failed_requests_per_second) {
            None => None,
            Some(per_second) => Some(FailureQuota {
                per_second,
                burst: NonZeroU32::new(self.failed_requests_burst)
                    .context("http.failed_requests_burst must be at least 1 (or set the rate to 0)")?,
            }),
        };
        let client_address_header = self
            .client_address_header
            .as_deref()
            .map(|name| {
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .with_context(|| format!("http.client_address_header: `{name}` is not a header name"))
            })
            .transpose()?;
        Ok(HttpSettings { body_limit: self.body_limit_bytes, failure_quota, client_address_header })
    }
}

/// Values from the environment and the command line, each overriding the file when set.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SIDEKEY_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[command(flatten)]
    #[serde(skip_serializing_if = "SessionOverrides::is_empty")]
    pub session: SessionOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "StoreOverrides::is_empty")]
    pub store: StoreOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "SecretsOverrides::is_empty")]
    pub secrets: SecretsOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "BridgeOverrides::is_empty")]
    pub bridge: BridgeOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "AuthOverrides::is_empty")]
    pub auth: AuthOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "DirectoryOverrides::is_empty")]
    pub directory: DirectoryOverrides,
    #[command(flatten)]
    #[serde(skip_serializing_if = "LogOverrides::is_empty")]
    pub log: LogOverrides,
    /// The admin token is read from the environment only (`SIDEKEY_ADMIN_TOKEN`): a flag would show it to
    /// every user of `ps`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "AdminOverrides::is_empty")]
    pub admin: AdminOverrides,
}

/// Session overrides.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct SessionOverrides {
    /// Default session TTL in seconds [default: 3600].
    #[arg(long = "default-ttl", env = "SIDEKEY_DEFAULT_TTL")]
    #[serde(rename = "default_ttl_seconds", skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<u64>,
    /// Shortest TTL a client may ask for, in seconds [default: 1].
    #[arg(long = "min-ttl", env = "SIDEKEY_MIN_TTL")]
    #[serde(rename = "min_ttl_seconds", skip_serializing_if = "Option::is_none")]
    pub min_ttl: Option<u64>,
    /// Longest TTL a client may ask for, in seconds [default: 86400].
    #[arg(long = "max-ttl", env = "SIDEKEY_MAX_TTL")]
    #[serde(rename = "max_ttl_seconds", skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u64>,
    /// Refreshes never extend a session past issued_at + this, in seconds [default: 86400].
    #[arg(long = "max-lifetime", env = "SIDEKEY_MAX_LIFETIME")]
    #[serde(rename = "max_lifetime_seconds", skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<u64>,
}

/// Store overrides.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct StoreOverrides {
    /// Session store: `memory`, or `redis://`, `rediss://`, `redis+unix://`, `redis+cluster://` [default: memory].
    #[arg(long = "store", env = "SIDEKEY_STORE")]
    #[serde(rename = "url", skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Key prefix in a shared store [default: sidekey].
    #[arg(long = "store-prefix", env = "SIDEKEY_STORE_PREFIX")]
    #[serde(rename = "prefix", skip_serializing_if = "Option::is_none")]
    pub store_prefix: Option<String>,
}

/// Secret source overrides.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct SecretsOverrides {
    /// Secret source: `env` (SIDEKEY_SECRET_<ID>), `file:DIR`, `toml:PATH`, or `redis://…` (the event
    /// bus to a bridge) [default: env].
    #[arg(long = "secrets", env = "SIDEKEY_SECRETS")]
    #[serde(rename = "source", skip_serializing_if = "Option::is_none")]
    pub secrets: Option<String>,
    /// How long an issuance waits for the bridge, in milliseconds [default: 5000].
    #[arg(long = "secrets-timeout-ms", env = "SIDEKEY_SECRETS_TIMEOUT_MS")]
    #[serde(rename = "timeout_ms", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Bridge overrides (the bridge secret is read from the environment only: see [`Overrides`]).
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct BridgeOverrides {
    /// Where `sidekey bridge` finds keys: `env`, `file:DIR` or `toml:PATH` [default: env].
    #[arg(long = "bridge-source", env = "SIDEKEY_BRIDGE_SOURCE")]
    #[serde(rename = "source", skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `SIDEKEY_BRIDGE_SECRET`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

/// Caller authentication overrides (the shared secrets are read from the environment only).
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct AuthOverrides {
    /// Who may create sessions: `none` or `jwt` [default: none].
    #[arg(long = "auth-mode", env = "SIDEKEY_AUTH_MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The identity provider's JWKS URL.
    #[arg(long = "jwks-url", env = "SIDEKEY_AUTH_JWKS_URL")]
    #[serde(rename = "jwks_url", skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// `SIDEKEY_AUTH_HS256_SECRET`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<Secret>,
    /// `SIDEKEY_BETTER_AUTH_SECRET`.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub better_auth_secret: Option<Secret>,
}

/// User directory overrides.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct DirectoryOverrides {
    /// PostgreSQL URL of Better Auth's tables.
    #[arg(long = "directory", env = "SIDEKEY_DIRECTORY_URL")]
    #[serde(rename = "url", skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Log overrides.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct LogOverrides {
    /// Log format: human or json [default: human].
    #[arg(long = "log-format", env = "SIDEKEY_LOG_FORMAT")]
    #[serde(rename = "format", skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `debug,hyper=info` [default: info].
    #[arg(long = "log", env = "SIDEKEY_LOG")]
    #[serde(rename = "filter", skip_serializing_if = "Option::is_none")]
    pub log_filter: Option<String>,
}

/// Admin overrides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdminOverrides {
    /// `SIDEKEY_ADMIN_TOKEN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

macro_rules! all_none {
    ($($ty:ident { $($field:ident),+ }),+ $(,)?) => {
        $(impl $ty {
            fn is_empty(&self) -> bool {
                $(self.$field.is_none())&&+
            }
        })+
    };
}
all_none!(
    SessionOverrides { default_ttl, min_ttl, max_ttl, max_lifetime },
    StoreOverrides { store, store_prefix },
    SecretsOverrides { secrets, timeout_ms },
    BridgeOverrides { source, secret },
    AuthOverrides { mode, jwks_url, hs256_secret, better_auth_secret },
    DirectoryOverrides { url },
    LogOverrides { log_format, log_filter },
    AdminOverrides { token },
);

impl Overrides {
    /// Fills what clap cannot read (environment-only settings).
    pub fn with_environment(mut self) -> Self {
        if let Ok(token) = std::env::var("SIDEKEY_ADMIN_TOKEN")
            && !token.is_empty()
        {
            self.admin.token = Some(Secret(token));
        }
        let secret = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty()).map(Secret);
        if let Some(secret) = secret("SIDEKEY_BRIDGE_SECRET") {
            self.bridge.secret = Some(secret);
        }
        if let Some(secret) = secret("SIDEKEY_AUTH_HS256_SECRET") {
            self.auth.hs256_secret = Some(secret);
        }
        if let Some(secret) = secret("SIDEKEY_BETTER_AUTH_SECRET") {
            self.auth.better_auth_secret = Some(secret);
        }
        self
    }
}

/// Loads the configuration: defaults, then `file` (which must exist if given), then `overrides`.
///
/// # Errors
/// When the file cannot be read or parsed, or a value has the wrong type or an unknown key.
pub fn load(file: Option<&PathBuf>, overrides: &Overrides) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.is_file() {
            bail!("configuration file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Serialized::defaults(overrides));
    figment.extract().context("invalid configuration")
}

impl Config {
    /// The session policy these settings describe.
    ///
    /// # Errors
    /// When the bounds contradict each other.
    pub fn session_policy(&self) -> anyhow::Result<SessionPolicy> {
        let s = &self.session;
        SessionPolicy::from_seconds(
            s.default_ttl_seconds,
            s.min_ttl_seconds,
            s.max_ttl_seconds,
            s.max_lifetime_seconds,
        )
        .context("invalid [session] settings")
    }

    /// The listen address.
    ///
    /// # Errors
    /// When `listen` is not `HOST:PORT` with an IP host.
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listen.parse().with_context(|| format!("listen = {:?} is not an IP:port address", self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "sidekey-config-{}-{}.toml",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn no_file_gives_the_contract_defaults() {
        let config = load(None, &Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, "127.0.0.1:8080");
        assert_eq!(config.session.default_ttl_seconds, 3600);
        assert_eq!(config.store.url, "memory");
        assert_eq!(config.secrets.source, "env");
        assert_eq!(config.secrets.timeout_ms, 5000);
    }

    #[test]
    fn an_empty_file_is_valid_and_the_contract_example_parses() {
        assert_eq!(load(Some(&write("")), &Overrides::default()).unwrap(), Config::default());
        let example = r#"
listen = "127.0.0.1:9000"
[session]
default_ttl_seconds = 600
min_ttl_seconds = 1
max_ttl_seconds = 7200
max_lifetime_seconds = 86400
[store]
url = "memory"
prefix = "sidekey"
[secrets]
source = "env"
timeout_ms = 5000
[bridge]
source = "env"
secret = "bridge-secret"
[admin]
token = "admin-secret"
[auth]
mode = "none"
jwks_url = "http://127.0.0.1:3000/api/auth/jwks"
hs256_secret = "hs"
issuer = "http://127.0.0.1:3000"
audience = "http://127.0.0.1:3000"
leeway_seconds = 30
better_auth_secret = "ba"
[directory]
url = "postgres://postgres@127.0.0.1:5432/app"
[[upstreams]]
name = "openai"
base_url = "https://api.openai.com"
allowed_secret_key_ids = ["openai-*"]
credential_header = "authorization"
credential_scheme = "Bearer"
[cors]
allowed_origins = ["http://localhost:3000"]
"#;
        let config = load(Some(&write(example)), &Overrides::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(config.session.default_ttl_seconds, 600);
        assert_eq!(config.admin.token.as_ref().unwrap().expose(), "admin-secret");
        assert_eq!(config.upstreams[0].allowed_secret_key_ids, ["openai-*"]);
        assert_eq!(config.upstreams[0].response_timeout_ms, 300_000);
        assert_eq!(config.cors.allowed_origins, ["http://localhost:3000"]);
        let printed = format!("{config:?}");
        for secret in ["admin-secret", "bridge-secret", "\"hs\"", "\"ba\""] {
            assert!(!printed.contains(secret), "Debug shows {secret}: {printed}");
        }
    }

    #[test]
    fn overrides_beat_the_file_and_unset_overrides_do_not() {
        let file = write(
            "listen = \"127.0.0.1:9001\"\n[session]\ndefault_ttl_seconds = 900\nmax_ttl_seconds = 1000\n",
        );
        let overrides = Overrides {
            session: SessionOverrides { default_ttl: Some(120), ..Default::default() },
            ..Default::default()
        };
        let config = load(Some(&file), &overrides).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9001");
        assert_eq!(config.session.default_ttl_seconds, 120);
        assert_eq!(config.session.max_ttl_seconds, 1000);
    }

    #[test]
    fn unknown_keys_wrong_types_and_missing_files_are_refused() {
        assert!(load(Some(&write("listne = \"x\"\n")), &Overrides::default()).is_err());
        assert!(
            load(Some(&write("[session]\ndefault_ttl_seconds = \"long\"\n")), &Overrides::default()).is_err()
        );
        assert!(load(Some(&PathBuf::from("/nonexistent/sidekey.toml")), &Overrides::default()).is_err());
    }

    #[test]
    fn an_upstream_with_every_key_becomes_the_adapters_settings() {
        let file = write(
            r#"
[[upstreams]]
name = "anthropic"
base_url = "https://api.anthropic.com"
allowed_secret_key_ids = ["anthropic-prod", "anthropic-*"]
credential_header = "x-api-key"
credential_scheme = ""
headers = { "anthropic-version" = "2023-06-01" }
connect_timeout_ms = 1000
response_timeout_ms = 2000
idle_timeout_ms = 3000
max_request_body_bytes = 4096

[[upstreams]]
name = "gemini"
base_url = "https://generativelanguage.googleapis.com/v1beta"
allowed_secret_key_ids = ["gemini"]
credential_query = "key"

[cors]
allowed_origins = ["http://localhost:3000"]
max_age_seconds = 60
"#,
        );
        let config = load(Some(&file), &Overrides::default()).unwrap();
        let anthropic = config.upstreams[0].settings();
        assert_eq!(anthropic.credential_header, "x-api-key");
        assert_eq!(anthropic.credential_scheme, "");
        assert_eq!(anthropic.headers["anthropic-version"], "2023-06-01");
        assert_eq!(anthropic.connect_timeout, Duration::from_secs(1));
        assert_eq!(anthropic.response_timeout, Duration::from_secs(2));
        assert_eq!(anthropic.idle_timeout, Duration::from_secs(3));
        assert_eq!(anthropic.max_request_body_bytes, 4096);
        let gemini = config.upstreams[1].settings();
        assert_eq!(gemini.credential_query.as_deref(), Some("key"));
        assert_eq!(gemini.credential_header, "authorization");
        assert_eq!(gemini.credential_scheme, "Bearer");
        assert_eq!(gemini.response_timeout, UpstreamSettings::DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(config.cors.max_age_seconds, 60);
        assert!(
            load(Some(&write("[[upstreams]]\nname = \"a\"\ntimeout = 1\n")), &Overrides::default()).is_err()
        );
    }

    #[test]
    fn contradictory_session_bounds_are_refused() {
        let mut config = Config::default();
        config.session.default_ttl_seconds = 100_000;
        assert!(config.session_policy().is_err());
        assert!(Config::default().session_policy().is_ok());
    }
}
