//! The `sidekey` binary's library: configuration, wiring of adapters to use cases, and the server.
//!
//! The composition root: the only crate that knows every adapter, installs the tracing subscriber and
//! the metrics recorder, and uses `anyhow`. The end-to-end tests start the real server through [`spawn`].
//!
//! # Layout
//! - [`config`]: the layered configuration (defaults ← TOML ← `SIDEKEY_*` ← flags).
//! - [`telemetry`]: the tracing subscriber (human or JSON) and the Prometheus recorder.
//! - `bus` (feature `redis`): the event bus to the bridges: the secret source over it, `sidekey bridge`,
//!   `sidekey announce`, the rotation listener.
//! - this file: [`build`] turns a configuration into the HTTP application (on the system clock, or on
//!   any [`Clock`] with [`build_on`]); [`spawn`] and [`serve`] run it.
//!
//! The optional adapters are behind the features `redis`, `postgres` and `jwt` (all on by default); a
//! configuration that asks for one this build lacks is refused at start-up, naming the feature.

pub mod config;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sidekey_application::{
    CallerAuthenticator, CascadeCheck, Clock, IssuanceLimits, Metering, Scoping, SecretSource,
    SessionService, SessionStore, TicketStore, UsageLedger,
};
use sidekey_domain::SecretRef;
use sidekey_http::{self as http, HttpApp, HttpSettings, HttpState, MetricsRenderer, Proxy, Surface};
use sidekey_local::{InMemorySessionStore, InMemoryUsageLedger, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
use config::{AuthMode, SecretsSource, StoreUrl};

/// Builds the HTTP application a configuration describes, on the system clock. Must run inside a Tokio
/// runtime (the memory store starts its purge task).
///
/// # Errors
/// When the configuration asks for something contradictory or not available in this build.
pub async fn build(config: &Config, metrics: Option<MetricsRenderer>) -> anyhow::Result<HttpApps> {
    build_on(config, metrics, Arc::new(SystemClock)).await
}

/// [`build`], with time from `clock`: tests pass a clock they move themselves.
///
/// The URL a store was given is never logged: it may hold a Redis password.
///
/// # Errors
/// As [`build`].
pub async fn build_on(
    config: &Config,
    metrics: Option<MetricsRenderer>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<HttpApps> {
    let policy = config.session_policy()?;
    let store = session_store(config, clock.clone()).await?;
    let secrets = secret_source(config, clock.clone()).await?;
    let proxy = if config.upstreams.is_empty() {
        None
    } else {
        Some(Proxy::new(&config.upstreams).context("invalid [[upstreams]]")?)
    };
    for upstream in config.upstreams.iter().filter(|upstream| upstream.routes.is_none()) {
        tracing::warn!(
            upstream = %upstream.name,
            "upstream admits any route: a session token reaches every route of it with the real key; \
             list the routes the app needs in its `routes`"
        );
    }
    let cors = config.cors.settings().context("invalid [cors]")?;
    for warning in config.http.warnings() {
        tracing::warn!("{warning}");
    }
    let scoping = Scoping {
        upstreams: proxy.as_ref().map(Proxy::policies).unwrap_or_default(),
        limits: config.limits.policy().context("invalid [limits]")?,
    };
    let ledger = usage_ledger(config, clock.clone()).await?;
    let issuance = IssuanceLimits {
        max_metadata_bytes: config.session.max_metadata_bytes,
        max_live_per_subject: config.session.max_live_per_subject.map(|max| (max, ledger.clone())),
    };
    let metering =
        Arc::new(Metering::new(ledger, clock.clone(), config.limits.budgets().context("invalid [limits]")?));
    let mut service = SessionService::new(store, secrets.source.clone(), clock.clone(), policy)
        .with_scoping(scoping)
        .with_issuance_limits(issuance)
        .with_tickets(ticket_store(config, clock.clone())?);
    let callers = caller_authentication(config, clock.clone())?;
    if let Some(callers) = &callers
        && let Some(cascade) = &callers.cascade
    {
        service = service.with_cascade(cascade.clone());
    }
    let sessions = Arc::new(service);
    secrets.listen_for_rotations(clock, &sessions);
    let state = Arc::new(HttpState {
        sessions,
        admin: config.admin.credential()?,
        metrics,
        proxy,
        cors,
        callers: callers.map(|callers| callers.authenticator),
        metering,
        issue_rate: config.http.issue_limiter(),
        relays: Default::default(),
    });
    let settings = config.http.settings().context("invalid [http]")?;
    if config.admin.listen.is_none() {
        return Ok(HttpApps { public: http::app(state, settings), admin: None });
    }
    Ok(HttpApps {
        public: http::app(state.clone(), HttpSettings { surface: Surface::Public, ..settings.clone() }),
        admin: Some(http::app(state, HttpSettings { surface: Surface::Admin, ..settings })),
    })
}

/// The applications of the listeners: `listen`, and `admin.listen` when set.
pub struct HttpApps {
    /// Every route, or (with an admin listener) every route but the admin API and `/metrics`.
    pub public: HttpApp,
    /// The admin API, `/metrics` and the health checks, when `admin.listen` is set.
    pub admin: Option<HttpApp>,
}

/// Who may create sessions, and the cascade to the user directory when there is one.
struct Callers {
    authenticator: Arc<CallerAuthenticator>,
    cascade: Option<Arc<CascadeCheck>>,
}

/// Who may create sessions (`auth.mode`). `None` with `auth.mode = "none"`.
///
/// Fails closed: `jwt` without any way to check a credential, or Better Auth sessions without a
/// directory, are refused at start-up.
fn caller_authentication(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Option<Callers>> {
    match config.auth.mode {
        AuthMode::None => {
            if credentials_configured(config) {
                // The contract's example file sets them beside mode = "none": say so rather than refuse.
                tracing::warn!(
                    "auth.mode is \"none\": anyone who reaches sidekey may create sessions; the configured \
                     [auth] credentials and [directory] are not used"
                );
            }
            Ok(None)
        }
        AuthMode::Jwt => jwt_callers(config, clock).map(Some),
    }
}

#[cfg_attr(not(any(feature = "jwt", feature = "postgres")), allow(unused_variables))]
fn credentials_configured(config: &Config) -> bool {
    #[cfg(feature = "jwt")]
    let jwt = config.auth.jwt.is_configured();
    #[cfg(not(feature = "jwt"))]
    let jwt = false;
    #[cfg(feature = "postgres")]
    let directory = config.directory.url.is_some();
    #[cfg(not(feature = "postgres"))]
    let directory = false;
    jwt || directory
}

#[cfg(feature = "jwt")]
fn jwt_callers(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Callers> {
    #[cfg(feature = "postgres")]
    let (directory, cascade) = match config.directory.directory()? {
        Some(directory) => {
            let directory: Arc<dyn sidekey_application::UserDirectory> = Arc::new(directory);
            let cascade = CascadeCheck::new(directory.clone(), config.directory.cascade_check());
            (Some(directory), Some(Arc::new(cascade)))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "postgres"))]
    let (directory, cascade) = (None, None);
    let verifiers = config.auth.jwt.verifiers(directory.clone())?;
    let authenticator = CallerAuthenticator::new(Arc::new(verifiers), directory, clock);
    Ok(Callers { authenticator: Arc::new(authenticator), cascade })
}

#[cfg(not(feature = "jwt"))]
fn jwt_callers(_: &Config, _: Arc<dyn Clock>) -> anyhow::Result<Callers> {
    anyhow::bail!("auth.mode = \"jwt\", but this build of sidekey has no JWT support (cargo feature `jwt`)")
}

/// The secret source `secrets.source` names, and what listens for its rotation announcements.
struct Secrets {
    source: Arc<dyn SecretSource>,
    #[cfg(feature = "redis")]
    bus: Option<bus::BusWiring>,
}

impl Secrets {
    /// Revokes, on this instance's store, every session bound to a key the bridge announces as rotated
    /// or withdrawn (only with a bus). The task ends with the service.
    #[cfg_attr(not(feature = "redis"), allow(clippy::unused_self, unused_variables))]
    fn listen_for_rotations(self, clock: Arc<dyn Clock>, sessions: &Arc<SessionService>) {
        #[cfg(feature = "redis")]
        if let Some(wiring) = self.bus {
            bus::listen_for_rotations(wiring, clock, sessions);
        }
    }
}

async fn secret_source(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Secrets> {
    match &config.secrets.source {
        SecretsSource::Local(local) => Ok(Secrets {
            source: local.open(),
            #[cfg(feature = "redis")]
            bus: None,
        }),
        #[cfg(feature = "redis")]
        SecretsSource::Bus(url) => {
            let (source, wiring) = bus::secret_source(config, url.expose(), clock).await?;
            Ok(Secrets { source, bus: Some(wiring) })
        }
        #[cfg(not(feature = "redis"))]
        SecretsSource::Bus(_) => {
            let _ = clock;
            anyhow::bail!(
                "secrets.source names an event bus, but this build of sidekey has no Redis (cargo feature `redis`)"
            )
        }
    }
}

/// Runs `sidekey bridge`: answers the requests on the bus `secrets.source` names from `bridge.source`,
/// until `stop` completes.
///
/// # Errors
/// When the configuration names no bus or no bridge secret, or this build has no bus.
pub async fn run_bridge(config: &Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    #[cfg(feature = "redis")]
    return bus::run_bridge(config, stop).await;
    #[cfg(not(feature = "redis"))]
    {
        let _ = (config, stop);
        anyhow::bail!(
            "`sidekey bridge` needs an event bus, and this build of sidekey has no Redis (cargo feature `redis`)"
        )
    }
}

/// Announces on the bus that `secret_ref` was rotated (or, `withdrawn`, withdrawn): every instance
/// revokes the sessions bound to it.
///
/// # Errors
/// When the configuration names no bus or no bridge secret, the bus is down, or this build has no bus.
pub async fn announce_rotation(
    config: &Config,
    secret_ref: &SecretRef,
    withdrawn: bool,
) -> anyhow::Result<()> {
    #[cfg(feature = "redis")]
    return bus::announce_rotation(config, secret_ref, withdrawn).await;
    #[cfg(not(feature = "redis"))]
    {
        let _ = (config, secret_ref, withdrawn);
        anyhow::bail!(
            "`sidekey announce` needs an event bus, and this build of sidekey has no Redis (cargo feature `redis`)"
        )
    }
}

/// Where limited sessions' requests and tokens are counted: beside the sessions.
async fn usage_ledger(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn UsageLedger>> {
    match &config.store.url {
        StoreUrl::Memory => Ok(Arc::new(InMemoryUsageLedger::new(clock))),
        // Every instance counts in the same Redis, each session's counters in its session's slot.
        #[cfg(feature = "redis")]
        StoreUrl::Redis(url) => {
            let ledger = sidekey_redis::RedisUsageLedger::connect(
                config.store.redis.store(url.expose(), &config.store.prefix),
                clock,
            )
            .await
            .context("store.url is not a usable Redis URL")?;
            Ok(Arc::new(ledger))
        }
        #[cfg(not(feature = "redis"))]
        StoreUrl::Redis(_) => {
            let _ = clock;
            anyhow::bail!(
                "store.url names Redis, but this build of sidekey has no Redis (cargo feature `redis`)"
            )
        }
    }
}

/// The one-time ticket store: where sessions are (one Redis for every instance, so a ticket works once
/// on any of them).
fn ticket_store(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn TicketStore>> {
    match &config.store.url {
        StoreUrl::Memory => Ok(Arc::new(sidekey_local::InMemoryTicketStore::new(clock))),
        #[cfg(feature = "redis")]
        StoreUrl::Redis(url) => {
            let settings = config.store.redis.store(url.expose(), &config.store.prefix);
            let store = sidekey_redis::RedisTicketStore::connect(&settings, clock)
                .context("store.url is not a usable Redis URL")?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "redis"))]
        StoreUrl::Redis(_) => {
            let _ = clock;
            anyhow::bail!(
                "store.url names Redis, but this build of sidekey has no Redis (cargo feature `redis`)"
            )
        }
    }
}

/// The session store `store.url` names.
async fn session_store(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn SessionStore>> {
    match &config.store.url {
        StoreUrl::Memory => Ok(Arc::new(InMemorySessionStore::new(clock))),
        #[cfg(feature = "redis")]
        StoreUrl::Redis(url) => {
            let redis = &config.store.redis;
            // Redis being down is not a reason to refuse to start: /readyz says so and the store reconnects.
            let store = sidekey_redis::RedisSessionStore::connect_with_cache(
                redis.store(url.expose(), &config.store.prefix),
                redis.cache(),
                clock,
            )
            .await
            .context("store.url is not a usable Redis URL")?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "redis"))]
        StoreUrl::Redis(_) => {
            anyhow::bail!(
                "store.url names Redis, but this build of sidekey has no Redis (cargo feature `redis`)"
            )
        }
    }
}

#[cfg(feature = "redis")]
mod bus;

/// A server started by [`spawn`].
pub struct RunningServer {
    /// The address it listens on (the real port when the configuration said port 0).
    pub addr: SocketAddr,
    /// The admin listener's address, when `admin.listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// The connection cap in force on each listener (`http.max_connections`, or its default from the
    /// open-file limit).
    pub max_connections: usize,
    shutdown: Option<watch::Sender<bool>>,
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
            let _ = shutdown.send(true);
        }
        (&mut self.task).await.context("server task panicked")?.context("server failed")
    }
}

/// Starts the server in the background on `config.listen` (port 0 picks a free port).
///
/// # Errors
/// When the configuration is invalid or the address cannot be bound.
pub async fn spawn(config: &Config, metrics: Option<MetricsRenderer>) -> anyhow::Result<RunningServer> {
    spawn_on(config, metrics, Arc::new(SystemClock)).await
}

/// [`spawn`], with time from `clock`.
///
/// # Errors
/// As [`spawn`].
pub async fn spawn_on(
    config: &Config,
    metrics: Option<MetricsRenderer>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<RunningServer> {
    let open_file_limit = open_file_limit();
    let settings = config.http.server_settings(open_file_limit).context("invalid [http]")?;
    if settings.max_connections as u64 >= open_file_limit {
        tracing::warn!(
            max_connections = settings.max_connections,
            open_file_limit,
            "http.max_connections is not below the open-file limit: past the limit, new connections wait \
             in the listen backlog and upstream connections fail"
        );
    }
    let apps = build_on(config, metrics, clock).await?;
    let listener = bind(config.listen_addr()?)?;
    let addr = listener.local_addr().context("the listener has no TCP address")?;
    let admin = match (apps.admin, config.admin.listen_addr()?) {
        (Some(app), Some(admin_addr)) => Some((bind(admin_addr)?, app)),
        _ => None,
    };
    let admin_addr =
        admin.as_ref().map(|(listener, _)| listener.local_addr()).transpose().context("no admin address")?;
    let (shutdown, signal) = watch::channel(false);
    // Both listeners stop on the one signal (or when the sender is dropped).
    let stopping = move || {
        let mut signal = signal.clone();
        async move {
            let _ = signal.wait_for(|stop| *stop).await;
        }
    };
    let max_connections = settings.max_connections;
    let task = tokio::spawn(async move {
        match admin {
            None => http::serve(listener, apps.public, settings, stopping()).await,
            Some((admin_listener, admin_app)) => {
                let public = http::serve(listener, apps.public, settings.clone(), stopping());
                let admin = http::serve(admin_listener, admin_app, settings, stopping());
                let (public, admin) = tokio::join!(public, admin);
                public.and(admin)
            }
        }
    });
    Ok(RunningServer { addr, admin_addr, max_connections, shutdown: Some(shutdown), task })
}

fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    http::listen(addr).with_context(|| format!("cannot listen on {addr}"))
}

/// The process's soft limit on open files (`sidekey serve` raises it to the hard limit first).
fn open_file_limit() -> u64 {
    #[cfg(unix)]
    if let Ok((soft, _hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        return soft;
    }
    // Unknown: the usual default soft limit.
    FALLBACK_OPEN_FILE_LIMIT
}

/// The open-file limit assumed when the system does not say: the usual default soft limit on Linux.
const FALLBACK_OPEN_FILE_LIMIT: u64 = 1024;

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
        admin_addr = ?server.admin_addr,
        store = %config.store.url,
        secrets = %config.secrets.source,
        admin_api = config.admin.token.is_some(),
        upstreams = ?config.upstreams.iter().map(|upstream| upstream.name.as_str()).collect::<Vec<_>>(),
        cors_origins = config.cors.allowed_origins.len(),
        max_connections = server.max_connections,
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
    use super::config::without_credentials;
    use super::{Config, build};

    use super::config::{AuthMode, Secret, SecretsSource};

    fn with_secrets(source: &str, bridge_secret: Option<&str>) -> Config {
        let mut config = Config::default();
        config.secrets.source = source.parse().unwrap();
        config.bridge.secret = bridge_secret.map(Secret::new);
        config
    }

    async fn refusal(config: &Config) -> String {
        match build(config, None).await {
            Ok(_) => panic!("the configuration was accepted"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[tokio::test]
    async fn contradictory_caller_authentication_settings_are_refused_at_start() {
        let mut config = Config::default();
        config.auth.mode = AuthMode::Jwt;
        assert!(refusal(&config).await.contains("auth.mode = \"jwt\" needs"));
        config.auth.jwt.hs256_secret = Some(Secret::new("too-short"));
        assert!(refusal(&config).await.contains("at least 32 bytes"));
        config.auth.jwt.hs256_secret = None;
        config.auth.jwt.better_auth_secret = Some(Secret::new("better-auth-secret"));
        assert!(refusal(&config).await.contains("needs [directory]"));
        assert!("oauth".parse::<AuthMode>().unwrap_err().contains("not an auth mode"));
        config.auth.mode = AuthMode::None;
        assert!(build(&config, None).await.is_ok(), "credentials beside mode none are not used, not refused");
    }

    #[tokio::test]
    async fn an_event_bus_without_a_strong_bridge_secret_or_an_unknown_source_is_refused_at_start() {
        let refused = refusal(&with_secrets("redis://127.0.0.1:1", None)).await;
        assert!(refused.contains("SIDEKEY_BRIDGE_SECRET"), "{refused}");
        let refused = refusal(&with_secrets("redis://127.0.0.1:1", Some("short"))).await;
        assert!(refused.contains("at least 16 bytes"), "{refused}");
        for unusable in ["redis+cluster://127.0.0.1:1", "vault:kv/openai"] {
            let refused = unusable.parse::<SecretsSource>().unwrap_err();
            assert!(refused.contains("must be"), "{refused}");
        }
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
