//! [`Bridge`]: the other end of the bus. It answers requests from a `SecretSource` of its own (the
//! environment, a directory, a TOML file) and announces the keys it sees rotated or withdrawn.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sidekey_application::{BusError, Clock, EventBus, SecretSource, SecretSourceError};
use sidekey_domain::SecretRef;
use tokio::sync::Semaphore;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::protocol::{
    AnnouncementReason, Answer, BridgeSecret, SecretAnnouncement, SecretReply, SecretRequest,
};

/// How a bridge works.
#[derive(Debug, Clone)]
pub struct BridgeSettings {
    /// Requests answered at once; more wait their turn on the bus.
    pub max_concurrent: usize,
    /// How often the keys served so far are read again to notice a rotation or a withdrawal; `None`
    /// turns the watch off.
    pub watch_interval: Option<Duration>,
    /// How late past its `expires_at_ms` a request is still answered: the clocks of the requester and
    /// the bridge may disagree by this much. Older requests (a backlog met after a restart) are dropped.
    pub clock_skew: Duration,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            watch_interval: Some(Duration::from_secs(5)),
            clock_skew: Duration::from_secs(30),
        }
    }
}

/// A bridge: answers secret requests from its source.
pub struct Bridge {
    shared: Arc<Shared>,
}

struct Shared {
    bus: Arc<dyn EventBus>,
    secret: BridgeSecret,
    source: Arc<dyn SecretSource>,
    clock: Arc<dyn Clock>,
    settings: BridgeSettings,
    /// What each key served looked like, to notice when it changes. A keyed hash (the key is random
    /// and lives only in this process), never the key itself.
    served: Mutex<HashMap<SecretRef, [u8; 32]>>,
    fingerprint_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("settings", &self.shared.settings).finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge answering from `source` on `bus`.
    ///
    /// # Errors
    /// The operating system had no randomness to give.
    pub fn new(
        bus: Arc<dyn EventBus>,
        secret: BridgeSecret,
        source: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
        settings: BridgeSettings,
    ) -> Result<Self, getrandom::Error> {
        let mut fingerprint_key = Zeroizing::new([0u8; 32]);
        getrandom::fill(fingerprint_key.as_mut())?;
        Ok(Self {
            shared: Arc::new(Shared {
                bus,
                secret,
                source,
                clock,
                settings,
                served: Mutex::new(HashMap::new()),
                fingerprint_key,
            }),
        })
    }

    /// Answers requests until `shutdown` completes (or the bus closes for good).
    ///
    /// # Errors
    /// [`BusError`] when the request feed cannot be opened.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        let mut requests = self.shared.bus.requests().await?;
        let permits = Arc::new(Semaphore::new(self.shared.settings.max_concurrent.max(1)));
        let watch =
            self.shared.settings.watch_interval.map(|every| tokio::spawn(watch(self.shared.clone(), every)));
        tokio::pin!(shutdown);
        tracing::info!("bridge answering requests");
        loop {
            let message = tokio::select! {
                () = &mut shutdown => break,
                message = requests.next() => message,
            };
            let Some(message) = message else { break };
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                shared.answer(&message).await;
                drop(permit);
            });
        }
        if let Some(watch) = watch {
            watch.abort();
        }
        tracing::info!("bridge stopped");
        Ok(())
    }
}

impl Shared {
    async fn answer(&self, message: &[u8]) {
        let request = match SecretRequest::verify(message, &self.secret) {
            Ok(request) => request,
            Err(error) => {
                metrics::counter!("sidekey_bridge_requests_refused_total").increment(1);
                tracing::warn!(%error, "refused a request");
                return;
            }
        };
        let late_by = millis(self.clock.now()).saturating_sub(request.expires_at_ms);
        if Duration::from_millis(late_by) > self.settings.clock_skew {
            tracing::debug!(id = %request.id, late_by_ms = late_by, "dropped an expired request");
            return;
        }
        let answer = match self.source.fetch(&request.secret_ref).await {
            Ok(value) => {
                self.remember(&request.secret_ref, value.expose());
                Answer::Found(value)
            }
            Err(SecretSourceError::NotFound) => Answer::NotFound,
            Err(error) => Answer::Failed(error.to_string()),
        };
        let outcome = match &answer {
            Answer::Found(_) => "found",
            Answer::NotFound => "not_found",
            Answer::Failed(_) => "failed",
        };
        let reply = match SecretReply::seal(&self.secret, &request, &answer) {
            Ok(reply) => reply,
            Err(error) => {
                tracing::error!(%error, "no randomness to seal a reply");
                return;
            }
        };
        drop(answer);
        match self.bus.send_reply(&request.reply_to, reply.to_bytes()).await {
            Ok(()) => {
                metrics::counter!("sidekey_bridge_answers_total", "outcome" => outcome).increment(1);
                tracing::info!(id = %request.id, secret_key_id = %request.secret_ref, outcome, "answered a request");
            }
            Err(error) => tracing::warn!(id = %request.id, %error, "could not send a reply"),
        }
    }

    fn fingerprint(&self, value: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.fingerprint_key.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn remember(&self, secret_ref: &SecretRef, value: &str) {
        let fingerprint = self.fingerprint(value);
        let previous = lock(&self.served).insert(secret_ref.clone(), fingerprint);
        if previous.is_some_and(|previous| previous != fingerprint) {
            // Served a new key before the watch noticed: the sessions on the old one must end.
            self.spawn_announce(secret_ref.clone(), AnnouncementReason::Rotated);
        }
    }

    fn spawn_announce(&self, secret_ref: SecretRef, reason: AnnouncementReason) {
        let bus = self.bus.clone();
        let secret = self.secret.clone();
        let now = self.clock.now();
        tokio::spawn(async move {
            if let Err(error) = announce(bus.as_ref(), &secret, &secret_ref, reason, now).await {
                tracing::warn!(%secret_ref, %error, "could not announce a rotation");
            }
        });
    }

    /// Reads every key served so far again, and announces those that changed or vanished.
    async fn check_served(&self) {
        let served: Vec<(SecretRef, [u8; 32])> =
            lock(&self.served).iter().map(|(name, fingerprint)| (name.clone(), *fingerprint)).collect();
        for (secret_ref, fingerprint) in served {
            let reason = match self.source.fetch(&secret_ref).await {
                Ok(value) if self.fingerprint(value.expose()) == fingerprint => continue,
                Ok(value) => {
                    lock(&self.served).insert(secret_ref.clone(), self.fingerprint(value.expose()));
                    AnnouncementReason::Rotated
                }
                Err(SecretSourceError::NotFound) => {
                    lock(&self.served).remove(&secret_ref);
                    AnnouncementReason::Withdrawn
                }
                // A source that cannot be read now says nothing about the key.
                Err(_) => continue,
            };
            if let Err(error) =
                announce(self.bus.as_ref(), &self.secret, &secret_ref, reason, self.clock.now()).await
            {
                tracing::warn!(%secret_ref, %error, "could not announce a rotation");
            }
        }
    }
}

async fn watch(shared: Arc<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        shared.check_served().await;
    }
}

/// Announces on `bus` that `secret_ref` was rotated or withdrawn: every instance revokes the sessions
/// bound to it.
///
/// # Errors
/// [`BusError`] when the bus cannot carry it.
pub async fn announce(
    bus: &dyn EventBus,
    secret: &BridgeSecret,
    secret_ref: &SecretRef,
    reason: AnnouncementReason,
    now: SystemTime,
) -> Result<(), BusError> {
    let announcement = SecretAnnouncement::new(secret, Uuid::new_v4(), secret_ref, reason, millis(now));
    bus.announce(announcement.to_bytes()).await?;
    tracing::info!(%secret_ref, reason = reason.as_str(), "announced");
    Ok(())
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
