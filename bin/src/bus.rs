//! The event bus to the bridges (feature `redis`): the instance's secret source over it, the bridge's
//! side, announcements, and the rotation listener.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, bail};
use sidekey_application::{Clock, EventBus, SecretSource, SessionService};
use sidekey_bridge::{
    AnnouncementReason, Bridge, BridgeSecret, EventBusSecretSource, announce, spawn_rotation_listener,
};
use sidekey_domain::SecretRef;
use sidekey_local::SystemClock;
use sidekey_redis::RedisBus;

use crate::config::{Config, SecretsSource};

/// The bus and bridge secret behind an event-bus secret source, for the rotation listener.
pub(crate) type BusWiring = (Arc<dyn EventBus>, BridgeSecret);

/// The secret source over the bus at `url`.
pub(crate) async fn secret_source(
    config: &Config,
    url: &str,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn SecretSource>, BusWiring)> {
    let bus = event_bus(config, url)?;
    let secret = bridge_secret(config)?;
    let source =
        EventBusSecretSource::start(bus.clone(), secret.clone(), clock, config.secrets.bus.settings())
            .await
            .context("cannot open the bridge inbox")?;
    Ok((Arc::new(source), (bus, secret)))
}

/// The event bus at `url`, under `secrets.prefix`.
fn event_bus(config: &Config, url: &str) -> anyhow::Result<Arc<dyn EventBus>> {
    let prefix = &config.secrets.prefix;
    // Inbox addresses (`{prefix}:bridge:inbox:<uuid>`) must stay printable ASCII within 200 bytes, or
    // bridges refuse every request.
    if prefix.is_empty() || prefix.len() > 100 || !prefix.bytes().all(|byte| byte.is_ascii_graphic()) {
        bail!("secrets.prefix must be 1 to 100 printable ASCII characters without spaces");
    }
    let bus = RedisBus::new(config.store.redis.bus(url, prefix)).context("secrets.source")?;
    Ok(Arc::new(bus))
}

/// The bus `secrets.source` names, for the commands that need one.
fn configured_bus(config: &Config) -> anyhow::Result<Arc<dyn EventBus>> {
    match &config.secrets.source {
        SecretsSource::Bus(url) => event_bus(config, url.expose()),
        SecretsSource::Local(_) => {
            bail!(
                "secrets.source must be a redis://, rediss:// or redis+unix:// URL: the event bus to the bridges"
            )
        }
    }
}

/// The bridge secret; required wherever a bus is used (fail closed: unauthenticated replies would let
/// anyone on the bus hand out keys).
fn bridge_secret(config: &Config) -> anyhow::Result<BridgeSecret> {
    let Some(secret) = &config.bridge.secret else {
        bail!("an event bus needs the bridge secret: set [bridge] secret or SIDEKEY_BRIDGE_SECRET");
    };
    BridgeSecret::new(secret.expose()).context("[bridge] secret")
}

/// Revokes, on this instance's store, every session bound to a key its bridge announces as rotated or
/// withdrawn. The task ends with the service.
pub(crate) fn listen_for_rotations(
    (bus, secret): BusWiring,
    clock: Arc<dyn Clock>,
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

/// `sidekey bridge`.
pub(crate) async fn run_bridge(config: &Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let bus = configured_bus(config)?;
    let secret = bridge_secret(config)?;
    let source = config.bridge.source.open();
    let bridge = Bridge::new(bus, secret, source, Arc::new(SystemClock), config.bridge.bridge.settings())
        .context("no randomness")?;
    tracing::info!(source = %config.bridge.source, prefix = %config.secrets.prefix, "bridge starting");
    bridge.run(stop).await.context("the bridge stopped")
}

/// `sidekey announce`.
pub(crate) async fn announce_rotation(
    config: &Config,
    secret_ref: &SecretRef,
    withdrawn: bool,
) -> anyhow::Result<()> {
    let bus = configured_bus(config)?;
    let secret = bridge_secret(config)?;
    let reason = if withdrawn { AnnouncementReason::Withdrawn } else { AnnouncementReason::Rotated };
    announce(bus.as_ref(), &secret, secret_ref, reason, std::time::SystemTime::now())
        .await
        .context("the announcement was not sent")
}
