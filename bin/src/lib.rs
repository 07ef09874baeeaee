//! The `sidekey` binary's library: configuration, wiring of adapters to use cases, and the server.
//!
//! The composition root: the only crate that knows every adapter, installs the tracing subscriber and
//! the metrics recorder, and uses `anyhow`. The end-to-end tests start the real server through [`spawn`].
//!
//! # Layout
//! - [`config`]: the layered configuration (defaults ← TOML ← `SIDEKEY_*` ← flags).
//! - [`telemetry`]: the tracing subscriber (human or JSON) and the Prometheus recorder.
//! - this file: [`build`] turns a configuration into the HTTP application; [`spawn`] and [`serve`] run it.

pub mod config;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sidekey_application::{
    CallerAuthenticator, CascadeCheck, EventBus, SecretSource, SessionService, SessionStore, UserDirectory,
};
use sidekey_bridge::{
    AnnouncementReason, Bridge, BridgeSecret, BridgeSettings, BusSourceSettings, EventBusSecretSource,
    announce, spawn_rotation_listener,
};
use sidekey_domain::SecretRef;
use sidekey_http::{self as http, AdminCredential, CorsSettings, HttpApp, HttpState, MetricsRenderer, Proxy};
use sidekey_jwt::{BetterAuthSessionVerifier, CallerVerifiers, JwtSettings, JwtVerifier};
use sidekey_local::{
    EnvSecretSource, FileSecretSource, InMemorySessionStore, SystemClock, TomlFileSecretSource,
};
use sidekey_postgres::{PostgresDirectory, PostgresDirectorySettings};
use sidekey_redis::{LocalCacheSettings, RedisBus, RedisBusSettings, RedisSessionStore, RedisStoreSettings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Config;

/// Builds the HTTP application a configuration describes. Must run inside a Tokio runtime (the memory
/// store starts its purge task).
///
/// The URL a store was given is never logged: it may hold a Redis password.
///
/// # Errors
/// When the configuration asks for something contradictory or not available in this build.
pub async fn build(config: &Config, metrics: Option<MetricsRenderer>) -> anyhow::Result<HttpApp> {
    let policy = config.session_policy()?;
    let clock = Arc::new(SystemClock);
    let store = session_store(config, clock.clone()).await?;
    let (secrets, bus) = secret_source(config, clock.clone()).await?;
    let (callers, directory) = caller_authentication(config, clock.clone())?;
    let proxy = if config.upstreams.is_empty() {
        None
    } else {
        let settings: Vec<_> = config.upstreams.iter().map(config::UpstreamConfig::settings).collect();
        Some(Proxy::new(&settings).context("invalid [[upstreams]]")?)
    };
    let cors =
        CorsSettings::new(&config.cors.allowed_origins, Duration::from_secs(config.cors.max_age_seconds))
            .context("invalid [cors]")?;
    let mut service = SessionService::new(store, secrets, clock.clone(), policy);
    if let Some(directory) = directory {
        let recheck_after = Duration::from_secs(config.directory.cascade_check_seconds);
        service = service.with_cascade(Arc::new(CascadeCheck::new(directory, recheck_after)));
    }
    let sessions = Arc::new(service);
    if let Some((bus, secret)) = bus {
        listen_for_rotations(bus, secret, clock, &sessions);
    }
    let state = Arc::new(HttpState {
        sessions,
        admin: config.admin.token.as_ref().map(|token| AdminCredential::new(token.expose())),
        metrics,
        proxy,
        cors,
        callers,
    });
    Ok(http::app(state, config.http.settings()?))
}

/// The user directory, shared by the caller check and the cascade.
type Directory = Arc<dyn UserDirectory>;

/// Who may create sessions (`auth.mode`), and the user directory when one is configured.
///
/// Fails closed: `jwt` without any way to check a credential, or Better Auth sessions without a
/// directory, are refused at start-up.
fn caller_authentication(
    config: &Config,
    clock: Arc<SystemClock>,
) -> anyhow::Result<(Option<Arc<CallerAuthenticator>>, Option<Directory>)> {
    let auth = &config.auth;
    let configured =
        auth.jwks_url.is_some() || auth.hs256_secret.is_some() || auth.better_auth_secret.is_some();
    match auth.mode.as_str() {
        "none" => {
            if configured || config.directory.url.is_some() {
                // The contract's example file sets them beside mode = "none": say so rather than refuse.
                tracing::warn!(
                    "auth.mode is \"none\": anyone who reaches sidekey may create sessions; the configured \
                     [auth] credentials and [directory] are not used"
                );
            }
            return Ok((None, None));
        }
        "jwt" if !configured => bail!(
            "auth.mode = \"jwt\" needs auth.jwks_url, auth.hs256_secret (SIDEKEY_AUTH_HS256_SECRET) or \
             auth.better_auth_secret (SIDEKEY_BETTER_AUTH_SECRET)"
        ),
        "jwt" => {}
        other => bail!("auth.mode = {other:?} is not supported (use \"none\" or \"jwt\")"),
    }
    let directory: Option<Directory> = match &config.directory.url {
        None => None,
        Some(url) => {
            let settings = PostgresDirectorySettings {
                url: url.clone(),
                schema: config.directory.schema.clone(),
                pool_size: config.directory.pool_size,
                connect_timeout: Duration::from_millis(config.directory.connect_timeout_ms),
                query_timeout: Duration::from_millis(config.directory.query_timeout_ms),
            };
            let directory =
                PostgresDirectory::new(settings).map_err(|error| anyhow::anyhow!("[directory] {error}"))?;
            Some(Arc::new(directory))
        }
    };
    let jwt = if auth.jwks_url.is_some() || auth.hs256_secret.is_some() {
        let settings = JwtSettings {
            jwks_url: auth.jwks_url.clone(),
            hs256_secret: auth.hs256_secret.as_ref().map(|secret| secret.expose().to_owned()),
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway: Duration::from_secs(auth.leeway_seconds),
            jwks_max_age: Duration::from_secs(auth.jwks_max_age_seconds),
            jwks_min_refetch_interval: Duration::from_secs(auth.jwks_min_refetch_seconds),
            ..JwtSettings::default()
        };
        Some(JwtVerifier::new(settings).map_err(|error| anyhow::anyhow!("[auth] {error}"))?)
    } else {
        None
    };
    let better_auth = match (&auth.better_auth_secret, &directory) {
        (None, _) => None,
        (Some(_), None) => bail!("auth.better_auth_secret needs [directory] url: sessions are checked there"),
        (Some(secret), Some(directory)) => {
            Some(BetterAuthSessionVerifier::new(secret.expose().to_owned(), directory.clone()))
        }
    };
    let verifier = Arc::new(CallerVerifiers::new(jwt, better_auth));
    let callers = CallerAuthenticator::new(verifier, directory.clone(), clock);
    Ok((Some(Arc::new(callers)), directory))
}

/// A secret source on this machine: `env`, `file:DIR` or `toml:PATH`; `None` for anything else.
fn local_secret_source(spec: &str) -> Option<Arc<dyn SecretSource>> {
    if spec == "env" {
        Some(Arc::new(EnvSecretSource))
    } else if let Some(directory) = spec.strip_prefix("file:") {
        Some(Arc::new(FileSecretSource::new(directory)))
    } else if let Some(path) = spec.strip_prefix("toml:") {
        Some(Arc::new(TomlFileSecretSource::new(path)))
    } else {
        None
    }
}

/// The bus and bridge secret behind an event-bus secret source, for the rotation listener.
type BusWiring = (Arc<dyn EventBus>, BridgeSecret);

/// The secret source `secrets.source` names, and the bus when it is one.
async fn secret_source(
    config: &Config,
    clock: Arc<SystemClock>,
) -> anyhow::Result<(Arc<dyn SecretSource>, Option<BusWiring>)> {
    let spec = config.secrets.source.as_str();
    if let Some(source) = local_secret_source(spec) {
        return Ok((source, None));
    }
    let bus = event_bus(config)?;
    let secret = bridge_secret(config)?;
    let settings = BusSourceSettings {
        timeout: Duration::from_millis(config.secrets.timeout_ms),
        max_pending: config.secrets.max_pending,
    };
    let source = EventBusSecretSource::start(bus.clone(), secret.clone(), clock, settings)
        .await
        .map_err(|error| anyhow::anyhow!("cannot open the bridge inbox: {error}"))?;
    Ok((Arc::new(source), Some((bus, secret))))
}

/// The event bus `secrets.source` names (a Redis URL).
fn event_bus(config: &Config) -> anyhow::Result<Arc<dyn EventBus>> {
    let url = config.secrets.source.as_str();
    if !["redis://", "rediss://", "redis+unix://"].iter().any(|scheme| url.starts_with(scheme)) {
        bail!(
            "secrets.source must be \"env\", \"file:DIR\", \"toml:PATH\" or a redis://, rediss:// or \
             redis+unix:// URL (the event bus to a bridge)"
        );
    }
    let prefix = &config.secrets.prefix;
    // Inbox addresses (`{prefix}:bridge:inbox:<uuid>`) must stay printable ASCII within 200 bytes, or
    // bridges refuse every request.
    if prefix.is_empty() || prefix.len() > 100 || !prefix.bytes().all(|byte| byte.is_ascii_graphic()) {
        bail!("secrets.prefix must be 1 to 100 printable ASCII characters without spaces");
    }
    let settings = RedisBusSettings {
        url: url.to_owned(),
        prefix: config.secrets.prefix.clone(),
        connect_timeout: Duration::from_millis(config.store.connect_timeout_ms),
        command_timeout: Duration::from_millis(config.store.command_timeout_ms),
    };
    let bus = RedisBus::new(settings).map_err(|error| anyhow::anyhow!("secrets.source: {error}"))?;
    Ok(Arc::new(bus))
}

/// The bridge secret; required wherever a bus is used (fail closed: unauthenticated replies would let
/// anyone on the bus hand out keys).
fn bridge_secret(config: &Config) -> anyhow::Result<BridgeSecret> {
    let Some(secret) = &config.bridge.secret else {
        bail!("an event bus needs the bridge secret: set [bridge] secret or SIDEKEY_BRIDGE_SECRET");
    };
    BridgeSecret::new(secret.expose()).map_err(|error| anyhow::anyhow!("[bridge] secret: {error}"))
}

/// Revokes, on this instance's store, every session bound to a key its bridge announces as rotated or
/// withdrawn. The task ends with the service.
fn listen_for_rotations(
    bus: Arc<dyn EventBus>,
    secret: BridgeSecret,
    clock: Arc<SystemClock>,
    sessions: &Arc<SessionService>,
) {
    let sessions = Arc::downgrade(sessions);
    spawn_rotation_listener(bus, secret, clock, move |announcement| {
        let sessions = sessions.clone();
        async move {
            let Some(sessions) = sessions.upgrade() else { return };
            let secret_ref = announcement.secret_ref;
            match sessions.revoke_rotated(&secret_ref).await {
                Ok(revoked) => tracing::info!(
                    %secret_ref,
                    reason = announcement.reason.as_str(),
                    revoked,
                    "revoked the sessions of an announced key"
                ),
                Err(error) => tracing::error!(
                    %secret_ref,
                    %error,
                    "could not revoke the sessions of an announced key"
                ),
            }
        }
    });
}

/// Runs `sidekey bridge`: answers the requests on the bus `secrets.source` names from `bridge.source`,
/// until `stop` completes.
///
/// # Errors
/// When the configuration names no bus, no usable bridge source or no bridge secret.
pub async fn run_bridge(config: &Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = event_bus(config)?;
    let secret = bridge_secret(config)?;
    let Some(source) = local_secret_source(&config.bridge.source) else {
        bail!("bridge.source must be \"env\", \"file:DIR\" or \"toml:PATH\"");
    };
    let settings = BridgeSettings {
        max_concurrent: config.bridge.max_concurrent,
        watch_interval: (config.bridge.watch_interval_ms > 0)
            .then(|| Duration::from_millis(config.bridge.watch_interval_ms)),
        ..BridgeSettings::default()
    };
    let bridge = Bridge::new(bus, secret, source, Arc::new(SystemClock), settings)
        .map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    tracing::info!(source = %config.bridge.source, prefix = %config.secrets.prefix, "bridge starting");
    bridge.run(stop).await.map_err(|error| anyhow::anyhow!("{error}"))
}

/// Announces on the bus that `secret_ref` was rotated or withdrawn: every instance revokes the sessions
/// bound to it.
///
/// # Errors
/// When the configuration names no bus or no bridge secret, or the bus is down.
pub async fn announce_rotation(
    config: &Config,
    secret_ref: &SecretRef,
    reason: AnnouncementReason,
) -> anyhow::Result<()> {
    let bus = event_bus(config)?;
    let secret = bridge_secret(config)?;
    announce(bus.as_ref(), &secret, secret_ref, reason, std::time::SystemTime::now())
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
}

/// The session store `store.url` names.
async fn session_store(config: &Config, clock: Arc<SystemClock>) -> anyhow::Result<Arc<dyn SessionStore>> {
    let url = config.store.url.as_str();
    if url == "memory" {
        return Ok(Arc::new(InMemorySessionStore::new(clock)));
    }
    if !REDIS_SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        bail!("store.url must be \"memory\" or a redis://, rediss://, redis+unix:// or redis+cluster:// URL");
    }
    let settings = RedisStoreSettings {
        url: url.to_owned(),
        prefix: config.store.prefix.clone(),
        connect_timeout: Duration::from_millis(config.store.connect_timeout_ms),
        command_timeout: Duration::from_millis(config.store.command_timeout_ms),
    };
    // Redis being down is not a reason to refuse to start: /readyz says so and the store reconnects.
    let cache = LocalCacheSettings {
        enabled: config.store.local_cache,
        capacity: config.store.cache_capacity,
        max_age: Duration::from_millis(config.store.cache_max_age_ms),
    };
    let store = RedisSessionStore::connect_with_cache(settings, cache, clock)
        .await
        .map_err(|error| anyhow::anyhow!("store.url is not a usable Redis URL: {error}"))?;
    Ok(Arc::new(store))
}

/// A store URL fit for a log line: a password in `redis://user:password@host` becomes `***`.
fn without_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|index| index + 3) else { return url.to_owned() };
    match url[scheme_end..].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_owned(),
    }
}

/// The URL schemes that select the Redis store.
const REDIS_SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "redis+cluster://"];

/// A server started by [`spawn`].
pub struct RunningServer {
    /// The address it listens on (the real port when the configuration said port 0).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The base URL, e.g. `http://127.0.0.1:39123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    ///
    /// # Errors
    /// When the server failed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.context("server task panicked")?.context("server failed")
    }
}

/// Starts the server in the background on `config.listen` (port 0 picks a free port).
///
/// # Errors
/// When the configuration is invalid or the address cannot be bound.
pub async fn spawn(config: &Config, metrics: Option<MetricsRenderer>) -> anyhow::Result<RunningServer> {
    let app = build(config, metrics).await?;
    let addr = config.listen_addr()?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("the listener has no TCP address")?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let grace = Duration::from_secs(config.http.shutdown_grace_seconds);
    let stop = async move {
        let _ = signal.await;
    };
    let task = tokio::spawn(http::serve(listener, app, stop, grace));
    Ok(RunningServer { addr: local, shutdown: Some(shutdown), task })
}

/// Runs the server until `stop` completes, then shuts down gracefully.
///
/// # Errors
/// When the server cannot start or fails.
pub async fn serve(
    config: &Config,
    metrics: Option<MetricsRenderer>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = spawn(config, metrics).await?;
    tracing::info!(
        addr = %server.addr,
        store = %without_credentials(&config.store.url),
        secrets = %without_credentials(&config.secrets.source),
        admin_api = config.admin.token.is_some(),
        upstreams = ?config.upstreams.iter().map(|upstream| upstream.name.as_str()).collect::<Vec<_>>(),
        cors_origins = config.cors.allowed_origins.len(),
        "sidekey is listening"
    );
    stop.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    server.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Registers handlers for SIGTERM and SIGINT (Ctrl-C) now, and returns a future that completes when
/// either arrives.
///
/// Registering at once matters: a handler installed only when the future is first polled leaves a
/// window after the server has announced itself in which a SIGTERM kills the process outright (exit by
/// signal, in-flight requests cut) instead of shutting it down gracefully.
///
/// # Panics
/// Outside a tokio runtime (signal handling needs its driver).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let wait = |kind| {
            let registered = signal(kind);
            async move {
                match registered {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    // Without a handler there is nothing to wait for; the default action remains.
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        };
        let (terminate, interrupt) = (wait(SignalKind::terminate()), wait(SignalKind::interrupt()));
        async move {
            tokio::select! {
                () = terminate => {}
                () = interrupt => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, build, without_credentials};

    fn with_secrets(source: &str, bridge_secret: Option<&str>) -> Config {
        let mut config = Config::default();
        config.secrets.source = source.to_owned();
        config.bridge.secret = bridge_secret
            .map(|text| serde_json::from_value(serde_json::Value::String(text.to_owned())).unwrap());
        config
    }

    async fn refusal(config: &Config) -> String {
        match build(config, None).await {
            Ok(_) => panic!("the configuration was accepted"),
            Err(error) => format!("{error:#}"),
        }
    }

    fn secret(text: &str) -> crate::config::Secret {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).unwrap()
    }

    #[tokio::test]
    async fn contradictory_caller_authentication_settings_are_refused_at_start() {
        let mut config = Config::default();
        config.auth.mode = "jwt".to_owned();
        assert!(refusal(&config).await.contains("auth.mode = \"jwt\" needs"));
        config.auth.hs256_secret = Some(secret("too-short"));
        assert!(refusal(&config).await.contains("at least 32 bytes"));
        config.auth.hs256_secret = None;
        config.auth.better_auth_secret = Some(secret("better-auth-secret"));
        assert!(refusal(&config).await.contains("needs [directory]"));
        config.auth.mode = "oauth".to_owned();
        assert!(refusal(&config).await.contains("not supported"));
        config.auth.mode = "none".to_owned();
        assert!(build(&config, None).await.is_ok(), "credentials beside mode none are not used, not refused");
    }

    #[tokio::test]
    async fn an_event_bus_without_a_strong_bridge_secret_or_an_unknown_source_is_refused_at_start() {
        let refused = refusal(&with_secrets("redis://127.0.0.1:1", None)).await;
        assert!(refused.contains("SIDEKEY_BRIDGE_SECRET"), "{refused}");
        let refused = refusal(&with_secrets("redis://127.0.0.1:1", Some("short"))).await;
        assert!(refused.contains("at least 16 bytes"), "{refused}");
        let refused =
            refusal(&with_secrets("redis+cluster://127.0.0.1:1", Some("a-long-enough-secret"))).await;
        assert!(refused.contains("secrets.source"), "{refused}");
        let refused = refusal(&with_secrets("vault:kv/openai", Some("a-long-enough-secret"))).await;
        assert!(refused.contains("secrets.source must be"), "{refused}");
        let refused = refusal(&with_secrets("redis://:hunter2-password@127.0.0.1:1/x?bad", None)).await;
        assert!(!refused.contains("hunter2"), "the refusal quotes the password: {refused}");
    }

    #[test]
    fn store_urls_lose_their_credentials_before_they_are_logged() {
        assert_eq!(without_credentials("redis://:s3cret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
        assert_eq!(without_credentials("rediss://user:p@ss@h:6380"), "rediss://***@h:6380");
        assert_eq!(without_credentials("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(without_credentials("memory"), "memory");
    }
}
