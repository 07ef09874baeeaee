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
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, Server};
use sidekey_adapters::http::{self, AdminCredential, CorsSettings, HttpSettings, HttpState, MetricsRenderer};
use sidekey_adapters::redis::LocalCacheSettings;
use sidekey_adapters::{
    EnvSecretSource, FileSecretSource, InMemorySessionStore, Proxy, RedisSessionStore, RedisStoreSettings,
    SystemClock,
};
use sidekey_application::{SecretSource, SessionService, SessionStore};
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
pub async fn build(
    config: &Config,
    metrics: Option<MetricsRenderer>,
) -> anyhow::Result<impl Endpoint + 'static> {
    let policy = config.session_policy()?;
    let clock = Arc::new(SystemClock);
    let store = session_store(config, clock.clone()).await?;
    let secrets: Arc<dyn SecretSource> = match config.secrets.source.as_str() {
        "env" => Arc::new(EnvSecretSource),
        source if source.starts_with("file:") => Arc::new(FileSecretSource::new(&source["file:".len()..])),
        other => {
            bail!("secrets.source = {other:?} is not supported by this build (use \"env\" or \"file:DIR\")")
        }
    };
    if config.auth.mode != "none" {
        // Fail closed: running without the caller check that the operator asked for would let anyone in.
        bail!("auth.mode = {:?} is not supported by this build (use \"none\")", config.auth.mode);
    }
    let proxy = if config.upstreams.is_empty() {
        None
    } else {
        let settings: Vec<_> = config.upstreams.iter().map(config::UpstreamConfig::settings).collect();
        Some(Proxy::new(&settings).context("invalid [[upstreams]]")?)
    };
    let cors =
        CorsSettings::new(&config.cors.allowed_origins, Duration::from_secs(config.cors.max_age_seconds))
            .context("invalid [cors]")?;
    let sessions = Arc::new(SessionService::new(store, secrets, clock, policy));
    let state = Arc::new(HttpState {
        sessions,
        admin: config.admin.token.as_ref().map(|token| AdminCredential::new(token.expose())),
        metrics,
        proxy,
        cors,
    });
    Ok(http::app(state, HttpSettings { body_limit: config.http.body_limit_bytes }))
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
    let acceptor =
        TcpListener::bind(addr).into_acceptor().await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = acceptor
        .local_addr()
        .into_iter()
        .find_map(|addr| addr.as_socket_addr().copied())
        .context("the listener has no TCP address")?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let grace = Duration::from_secs(config.http.shutdown_grace_seconds);
    let task = tokio::spawn(async move {
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                app,
                async move {
                    let _ = signal.await;
                },
                Some(grace),
            )
            .await
    });
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
        secrets = %config.secrets.source,
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

/// Completes on SIGTERM or Ctrl-C (SIGINT), whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn store_urls_lose_their_credentials_before_they_are_logged() {
        assert_eq!(without_credentials("redis://:s3cret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
        assert_eq!(without_credentials("rediss://user:p@ss@h:6380"), "rediss://***@h:6380");
        assert_eq!(without_credentials("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(without_credentials("memory"), "memory");
    }
}
