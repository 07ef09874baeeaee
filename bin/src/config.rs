//! Configuration: defaults, overridden by a TOML file, overridden by `SIDEKEY_*` environment variables,
//! overridden by flags.
//!
//! Each adapter owns the settings it uses ([`sidekey_http::HttpConfig`], [`sidekey_redis::RedisConfig`],
//! …): their fields, defaults and doc comments are declared there once, and [`Config`] composes them.
//! Everything else is derived from those types: the JSON Schema of [`Config`] drives the check that
//! refuses unknown keys ([`schema`]), `sidekey config --defaults` ([`print`](mod@print)), and the README test;
//! [`outside::SETTINGS`] is the one table of which keys an environment variable or a flag may set.
//!
//! Every key has a default, so an empty file, or none, is valid. Unknown keys are refused, so a typo
//! fails at start-up instead of silently running with a default.
//!
//! # Layout
//! - this file: [`Config`], its own sections, and [`load`].
//! - [`outside`]: the environment variables and flags, and how they reach the configuration.
//! - [`schema`]: the configuration's keys, from its JSON Schema; the unknown-key check.
//! - [`print`](mod@print): `sidekey config` (the effective configuration) and `sidekey config --defaults`.

pub mod outside;
pub mod print;
pub mod schema;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Format, Toml};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sidekey_application::Budgets;
use sidekey_domain::{Limits, LimitsParts, LimitsPolicy, SecretKeyLimits, SessionPolicy, SubjectLimits};
use sidekey_http::{CorsConfig, HttpConfig, UpstreamSettings};
use sidekey_local::LocalSource;
pub use sidekey_settings::Secret;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Config {
    /// Address to listen on (`HOST:PORT`).
    pub listen: String,
    /// Session lifetimes.
    pub session: SessionConfig,
    /// Where sessions live.
    pub store: StoreConfig,
    /// Where real keys come from.
    pub secrets: SecretsConfig,
    /// The bridge (read by `sidekey bridge`, and by `sidekey serve` to check its replies).
    pub bridge: BridgeSection,
    /// The admin API.
    pub admin: AdminConfig,
    /// Who may create sessions.
    pub auth: AuthConfig,
    /// The user directory: Better Auth's tables in PostgreSQL.
    #[cfg(feature = "postgres")]
    pub directory: sidekey_postgres::DirectoryConfig,
    /// Proxied upstreams.
    pub upstreams: Vec<UpstreamSettings>,
    /// CORS for browser frontends.
    pub cors: CorsConfig,
    /// Logging.
    pub log: LogConfig,
    /// HTTP limits.
    pub http: HttpConfig,
    /// What sessions, their subjects and their keys may consume.
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_owned(),
            session: SessionConfig::default(),
            store: StoreConfig::default(),
            secrets: SecretsConfig::default(),
            bridge: BridgeSection::default(),
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            #[cfg(feature = "postgres")]
            directory: sidekey_postgres::DirectoryConfig::default(),
            upstreams: Vec::new(),
            cors: CorsConfig::default(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// The contract's default address: loopback, so that nothing outside the host reaches a sidecar by
/// accident.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `[session]`: how long sessions live (the domain's [`SessionPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SessionConfig {
    /// TTL in seconds when a request names none.
    pub default_ttl_seconds: u64,
    /// Shortest TTL in seconds a request may ask for.
    pub min_ttl_seconds: u64,
    /// Longest TTL in seconds a request may ask for.
    pub max_ttl_seconds: u64,
    /// A refresh never extends a session past `issued_at` + this many seconds.
    pub max_lifetime_seconds: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let policy = SessionPolicy::DEFAULT;
        Self {
            default_ttl_seconds: policy.default_ttl().as_secs(),
            min_ttl_seconds: policy.min_ttl().as_secs(),
            max_ttl_seconds: policy.max_ttl().as_secs(),
            max_lifetime_seconds: policy.max_lifetime().as_secs(),
        }
    }
}

/// Where sessions live, as `store.url` spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub enum StoreUrl {
    /// `memory`: in this process.
    #[default]
    Memory,
    /// `redis://`, `rediss://`, `redis+unix://`, `redis+cluster://` or `rediss+cluster://`: shared by
    /// every instance.
    Redis(Secret),
}

/// The URL schemes that select the Redis store.
const REDIS_STORE_SCHEMES: [&str; 5] =
    ["redis://", "rediss://", "redis+unix://", "redis+cluster://", "rediss+cluster://"];
/// The URL schemes a Redis event bus may have (one server, not a cluster).
const REDIS_BUS_SCHEMES: [&str; 3] = ["redis://", "rediss://", "redis+unix://"];

impl TryFrom<String> for StoreUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text == "memory" {
            Ok(Self::Memory)
        } else if REDIS_STORE_SCHEMES.iter().any(|scheme| text.starts_with(scheme)) {
            Ok(Self::Redis(Secret::new(text)))
        } else {
            // Never quoted: a mistyped Redis URL may still hold a password.
            Err("must be \"memory\" or a redis://, rediss://, redis+unix:// or redis+cluster:// URL"
                .to_owned())
        }
    }
}

impl From<StoreUrl> for String {
    fn from(url: StoreUrl) -> Self {
        match url {
            StoreUrl::Memory => "memory".to_owned(),
            StoreUrl::Redis(url) => without_credentials(url.expose()),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::try_from(text.to_owned())
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct StoreConfig {
    /// Session store: `memory`, or a Redis URL (`redis://`, `rediss://`, `redis+unix://`,
    /// `redis+cluster://`) shared by every instance.
    pub url: StoreUrl,
    /// Key prefix in a shared store.
    pub prefix: String,
    /// How the store (and the event bus) talk to Redis.
    #[cfg(feature = "redis")]
    #[serde(flatten)]
    pub redis: sidekey_redis::RedisConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: StoreUrl::Memory,
            prefix: DEFAULT_PREFIX.to_owned(),
            #[cfg(feature = "redis")]
            redis: sidekey_redis::RedisConfig::default(),
        }
    }
}

/// The default prefix of every key and channel sidekey writes in a shared Redis.
const DEFAULT_PREFIX: &str = "sidekey";

/// Where real keys come from, as `secrets.source` spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub enum SecretsSource {
    /// On this machine: `env`, `file:DIR` or `toml:PATH`.
    Local(LocalSource),
    /// A Redis URL: the event bus to a bridge.
    Bus(Secret),
}

impl Default for SecretsSource {
    fn default() -> Self {
        Self::Local(LocalSource::Env)
    }
}

impl TryFrom<String> for SecretsSource {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if REDIS_BUS_SCHEMES.iter().any(|scheme| text.starts_with(scheme)) {
            return Ok(Self::Bus(Secret::new(text)));
        }
        text.parse().map(Self::Local).map_err(|_| {
            "must be \"env\", \"file:DIR\", \"toml:PATH\" or a redis://, rediss:// or redis+unix:// URL (the \
             event bus to a bridge)"
                .to_owned()
        })
    }
}

impl From<SecretsSource> for String {
    fn from(source: SecretsSource) -> Self {
        match source {
            SecretsSource::Local(local) => local.to_string(),
            SecretsSource::Bus(url) => without_credentials(url.expose()),
        }
    }
}

impl FromStr for SecretsSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::try_from(text.to_owned())
    }
}

/// `[secrets]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SecretsConfig {
    /// `env` (key `openai-prod` from `SIDEKEY_SECRET_OPENAI_PROD`), `file:DIR` (from the file
    /// `DIR/openai-prod`), `toml:PATH` (a TOML file of `name = "key"`), or a Redis URL: the event bus to a
    /// bridge.
    pub source: SecretsSource,
    /// Prefix of the event bus's streams and channels in Redis.
    pub prefix: String,
    /// How an instance waits on the bridge.
    #[cfg(feature = "redis")]
    #[serde(flatten)]
    pub bus: sidekey_bridge::BusSourceConfig,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            source: SecretsSource::default(),
            prefix: DEFAULT_PREFIX.to_owned(),
            #[cfg(feature = "redis")]
            bus: sidekey_bridge::BusSourceConfig::default(),
        }
    }
}

/// `[bridge]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BridgeSection {
    /// Where `sidekey bridge` finds keys: `env`, `file:DIR` or `toml:PATH`.
    pub source: LocalSource,
    /// Shared by the instances and the bridges, required with a bus (at least 16 bytes).
    pub secret: Option<Secret>,
    /// How the bridge answers.
    #[cfg(feature = "redis")]
    #[serde(flatten)]
    pub bridge: sidekey_bridge::BridgeConfig,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AdminConfig {
    /// The admin API's bearer token; unset: the admin API is off.
    pub token: Option<Secret>,
}

/// Who may create sessions (`auth.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone who reaches sidekey: a sidecar trusted by its frontend's backend.
    #[default]
    None,
    /// Callers prove who they are with a JWT or a Better Auth session.
    Jwt,
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "jwt" => Ok(Self::Jwt),
            other => Err(format!("{other:?} is not an auth mode (use \"none\" or \"jwt\")")),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AuthConfig {
    /// `none` (any caller may create sessions) or `jwt` (callers prove who they are).
    pub mode: AuthMode,
    /// How credentials are checked.
    #[cfg(feature = "jwt")]
    #[serde(flatten)]
    pub jwt: sidekey_jwt::JwtConfig,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LogConfig {
    /// `human` or `json` lines on stderr.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `warn,sidekey::audit=info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, filter: "info".to_owned() }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// `[limits]`: what sessions, their subjects and their keys may consume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LimitsConfig {
    /// The limits a session gets for each one it does not ask for.
    pub default: SessionLimitsConfig,
    /// The most a session may ask for (also its limit when it asks for none and there is no default).
    pub ceiling: SessionLimitsConfig,
    /// Budgets shared by every session of one subject (an authenticated user).
    pub subject: SubjectLimitsConfig,
    /// Budgets shared by every session of one real key.
    pub secret_key: SecretKeyLimitsConfig,
}

/// One set of a session's limits (`[limits.default]` or `[limits.ceiling]`); unset: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SessionLimitsConfig {
    /// Proxied requests over the session's life.
    pub max_requests: Option<u64>,
    /// Proxied requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Input and output tokens over the session's life.
    pub max_tokens: Option<u64>,
    /// Output tokens one request may ask for (clamped in proxied bodies).
    pub max_output_tokens_per_request: Option<u32>,
}

/// `[limits.subject]`; unset: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SubjectLimitsConfig {
    /// Input and output tokens per UTC day, over all of a subject's sessions.
    pub tokens_per_day: Option<u64>,
    /// Input and output tokens per UTC calendar month, over all of a subject's sessions.
    pub tokens_per_month: Option<u64>,
    /// Proxied requests per minute, over all of a subject's sessions.
    pub requests_per_minute: Option<u32>,
}

/// `[limits.secret_key]`; unset: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SecretKeyLimitsConfig {
    /// Input and output tokens per UTC day, over every session of one real key.
    pub tokens_per_day: Option<u64>,
}

impl LimitsConfig {
    /// The sessions' default and ceiling.
    ///
    /// # Errors
    /// A limit of zero, or a default above its ceiling, naming the key.
    pub fn policy(&self) -> anyhow::Result<LimitsPolicy> {
        let limits = |section: &str, parts: &SessionLimitsConfig| {
            Limits::new(LimitsParts {
                max_requests: parts.max_requests,
                requests_per_minute: parts.requests_per_minute,
                max_tokens: parts.max_tokens,
                max_output_tokens_per_request: parts.max_output_tokens_per_request,
            })
            .map_err(|error| anyhow::anyhow!("limits.{section}.{} must be at least 1", error.field.name()))
        };
        LimitsPolicy::new(limits("default", &self.default)?, limits("ceiling", &self.ceiling)?)
            .map_err(|error| anyhow::anyhow!("{error}"))
    }

    /// The budgets that span sessions.
    ///
    /// # Errors
    /// A budget of zero, naming the key.
    pub fn budgets(&self) -> anyhow::Result<Budgets> {
        let checked = |key: &str, value: Option<u64>| match value {
            Some(0) => Err(anyhow::anyhow!("limits.{key} must be at least 1 when set")),
            other => Ok(other),
        };
        Ok(Budgets {
            subject: SubjectLimits {
                tokens_per_day: checked("subject.tokens_per_day", self.subject.tokens_per_day)?,
                tokens_per_month: checked("subject.tokens_per_month", self.subject.tokens_per_month)?,
                requests_per_minute: checked(
                    "subject.requests_per_minute",
                    self.subject.requests_per_minute.map(u64::from),
                )?
                .map(|rate| rate as u32),
            },
            secret_key: SecretKeyLimits {
                tokens_per_day: checked("secret_key.tokens_per_day", self.secret_key.tokens_per_day)?,
            },
        })
    }
}

/// Loads the configuration: defaults, then `file` (which must exist if given), then the environment
/// (`environment`: variable name to value), then `flags` (key to value).
///
/// # Errors
/// When the file cannot be read or parsed, a key is unknown, or a value has the wrong type.
pub fn load<'a>(
    file: Option<&Path>,
    environment: impl IntoIterator<Item = (String, String)>,
    flags: impl IntoIterator<Item = (&'a str, String)>,
) -> anyhow::Result<Config> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.is_file() {
            bail!("configuration file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    for (key, value) in outside::from_environment(environment) {
        figment = figment.merge((key, value));
    }
    for (key, value) in flags {
        figment = figment.merge((key, outside::value_of(key, &value)));
    }
    schema::refuse_unknown_keys(&figment, file)?;
    figment.extract().map_err(|error| schema::explain(error, file))
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

    /// The listen address: the first address `listen` resolves to (a host name is looked up).
    ///
    /// # Errors
    /// When `listen` is not `HOST:PORT`, or the host resolves to nothing.
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        let invalid = || format!("listen = {:?} is not HOST:PORT", self.listen);
        if let Ok(addr) = self.listen.parse() {
            return Ok(addr);
        }
        self.listen.to_socket_addrs().with_context(invalid)?.next().with_context(invalid)
    }
}

/// A URL fit for a log line or a printed configuration: a password in `redis://user:password@host`
/// becomes `***`.
pub fn without_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|index| index + 3) else { return url.to_owned() };
    match url[scheme_end..].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_owned(),
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

impl fmt::Display for SecretsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

#[cfg(test)]
mod tests;
