//! [`EventBusSecretSource`]: the `SecretSource` port answered by a bridge over an [`EventBus`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use metrics::Counter;
use sidekey_application::{BusFeed, Clock, EventBus, SecretSource, SecretSourceError};
use sidekey_domain::{SecretRef, SecretValue};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::protocol::{Answer, BridgeSecret, EphemeralKey, SecretReply, SecretRequest};

/// Distinct requests that may wait on the bridge at once, by default. Past it, issuance answers 503 at
/// once instead of queueing: a flood aimed at a dead bridge costs a bounded amount of memory.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// How the source asks.
#[derive(Debug, Clone)]
pub struct BusSourceSettings {
    /// How long a request waits for its reply.
    pub timeout: Duration,
    /// How many distinct requests may wait at once.
    pub max_pending: usize,
}

/// How long a request waits for its reply by default: a bridge on the same network answers in
/// milliseconds; five seconds covers a busy one without holding a user long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for BusSourceSettings {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, max_pending: DEFAULT_MAX_PENDING }
    }
}

type Outcome = Result<Arc<SecretValue>, SecretSourceError>;

/// Real keys asked of a bridge, just in time, over an event bus.
///
/// - Each request carries a fresh X25519 key, so the key comes back sealed to this instance alone; the
///   reply must open under the bridge secret, so a rogue subscriber cannot answer.
/// - **Single flight:** concurrent fetches of one `secret_key_id` share one request on the bus.
/// - **Bounded:** at most `max_pending` distinct requests wait at once; each is forgotten at its
///   timeout, whether or not a reply ever comes.
/// - A reply that does not open (forged, or for another request) is counted and ignored; the request
///   keeps waiting for a genuine one until its timeout.
#[derive(Clone)]
pub struct EventBusSecretSource {
    shared: Arc<Inner>,
}

impl std::fmt::Debug for EventBusSecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBusSecretSource")
            .field("inbox", &self.shared.inbox)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    bus: Arc<dyn EventBus>,
    secret: BridgeSecret,
    clock: Arc<dyn Clock>,
    settings: BusSourceSettings,
    inbox: String,
    /// The requests on the bus, by `secret_key_id`: later fetches of the same name join them.
    in_flight: Mutex<HashMap<SecretRef, Shared<BoxFuture<'static, Outcome>>>>,
    /// The same requests by correlation id, with what it takes to open their replies.
    waiting: Mutex<HashMap<Uuid, Waiting>>,
    forged_replies: Counter,
    /// Dropped with the source, which ends the reply task (the inbox of an in-process bus never closes
    /// by itself).
    _stop_replies: oneshot::Sender<()>,
}

struct Waiting {
    secret_ref: SecretRef,
    key: EphemeralKey,
    reply: oneshot::Sender<Answer>,
}

impl EventBusSecretSource {
    /// Opens this instance's inbox on `bus` and starts the task that hands replies to their requests
    /// (it ends when the source and its clones are dropped).
    ///
    /// # Errors
    /// [`SecretSourceError::Unavailable`] when the inbox cannot be opened.
    pub async fn start(
        bus: Arc<dyn EventBus>,
        secret: BridgeSecret,
        clock: Arc<dyn Clock>,
        settings: BusSourceSettings,
    ) -> Result<Self, SecretSourceError> {
        let (inbox, feed) =
            bus.open_inbox().await.map_err(|error| SecretSourceError::Unavailable(error.to_string()))?;
        let (stop_replies, replies_stopped) = oneshot::channel();
        let shared = Arc::new(Inner {
            bus,
            secret,
            clock,
            settings,
            inbox,
            in_flight: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            forged_replies: metrics::counter!("sidekey_bridge_replies_refused_total"),
            _stop_replies: stop_replies,
        });
        tokio::spawn(deliver_replies(Arc::downgrade(&shared), feed, replies_stopped));
        Ok(Self { shared })
    }

    /// How many distinct requests wait on the bridge now.
    pub fn pending(&self) -> usize {
        lock(&self.shared.waiting).len()
    }
}

#[async_trait]
impl SecretSource for EventBusSecretSource {
    async fn fetch(&self, secret_ref: &SecretRef) -> Result<SecretValue, SecretSourceError> {
        let outcome = {
            let mut in_flight = lock(&self.shared.in_flight);
            match in_flight.get(secret_ref) {
                Some(joined) => joined.clone(),
                None => {
                    if in_flight.len() >= self.shared.settings.max_pending {
                        return Err(SecretSourceError::Unavailable(format!(
                            "{} requests already wait on the bridge",
                            in_flight.len()
                        )));
                    }
                    // The request runs as its own task, so a caller that gives up (a client that
                    // disconnects) does not cancel it for the others who joined it.
                    let task = tokio::spawn(ask(self.shared.clone(), secret_ref.clone()));
                    let outcome = async move {
                        task.await.unwrap_or_else(|_| {
                            Err(SecretSourceError::Failed("the bridge request task failed".to_owned()))
                        })
                    }
                    .boxed()
                    .shared();
                    in_flight.insert(secret_ref.clone(), outcome.clone());
                    outcome
                }
            }
        };
        // Each caller gets a copy of its own: the session keeps it, and zeroes it when it ends.
        outcome.await.and_then(|value| {
            SecretValue::new(value.expose().to_owned())
                .map_err(|_| SecretSourceError::Failed("the bridge sent an unusable key".to_owned()))
        })
    }

    async fn ping(&self) -> Result<(), SecretSourceError> {
        self.shared.bus.ping().await.map_err(|error| SecretSourceError::Unavailable(error.to_string()))
    }
}

/// One request on the bus and the wait for its reply. Removes itself from `in_flight` when done (the
/// entry is its own: a name is only ever inserted while absent, under the lock this takes).
async fn ask(shared: Arc<Inner>, secret_ref: SecretRef) -> Outcome {
    let outcome = ask_once(&shared, &secret_ref).await;
    lock(&shared.in_flight).remove(&secret_ref);
    outcome
}

async fn ask_once(shared: &Arc<Inner>, secret_ref: &SecretRef) -> Outcome {
    let timeout = shared.settings.timeout;
    let key = EphemeralKey::generate()
        .map_err(|error| SecretSourceError::Failed(format!("no randomness for a request key: {error}")))?;
    let id = Uuid::new_v4();
    let expires_at = shared.clock.now() + timeout;
    let expires_at_ms = expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    let request = SecretRequest::new(&shared.secret, id, secret_ref, &shared.inbox, &key, expires_at_ms);
    let (reply, answer) = oneshot::channel();
    lock(&shared.waiting).insert(id, Waiting { secret_ref: secret_ref.clone(), key, reply });
    // Forget the request however this ends: answered, timed out, or failed to send.
    let _forget = Forget { shared, id };
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::time::timeout_at(deadline, shared.bus.send_request(request.to_bytes()))
        .await
        .map_err(|_| SecretSourceError::Timeout(timeout))?
        .map_err(|error| SecretSourceError::Unavailable(error.to_string()))?;
    let answer = tokio::time::timeout_at(deadline, answer)
        .await
        .map_err(|_| SecretSourceError::Timeout(timeout))?
        .map_err(|_| SecretSourceError::Unavailable("the bus closed".to_owned()))?;
    match answer {
        Answer::Found(value) => Ok(Arc::new(value)),
        Answer::NotFound => Err(SecretSourceError::NotFound),
        Answer::Failed(cause) => Err(SecretSourceError::Failed(format!("the bridge failed: {cause}"))),
    }
}

struct Forget<'a> {
    shared: &'a Inner,
    id: Uuid,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.shared.waiting).remove(&self.id);
    }
}

/// Hands each reply in the inbox to its request, once it opens; ends when the source is dropped or the
/// bus closes.
async fn deliver_replies(
    source: std::sync::Weak<Inner>,
    mut feed: Box<dyn BusFeed>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let message = tokio::select! {
            _ = &mut stopped => return,
            message = feed.next() => message,
        };
        let Some(message) = message else { return };
        let Some(shared) = source.upgrade() else { return };
        deliver(&shared, &message);
    }
}

fn deliver(shared: &Inner, message: &[u8]) {
    let (id, reply) = match SecretReply::parse(message) {
        Ok(parsed) => parsed,
        Err(error) => {
            shared.forged_replies.increment(1);
            tracing::warn!(%error, "refused a message in the bridge inbox");
            return;
        }
    };
    let mut waiting = lock(&shared.waiting);
    let Some(request) = waiting.get(&id) else {
        // Late (the request timed out) or a duplicate: nothing waits for it any more.
        tracing::debug!(%id, "a bridge reply came for no waiting request");
        return;
    };
    match reply.open(&shared.secret, &request.key, &request.secret_ref) {
        Ok(answer) => {
            if let Some(request) = waiting.remove(&id) {
                // The requester may have just given up; then the answer is dropped (and zeroed).
                let _ = request.reply.send(answer);
            }
        }
        Err(error) => {
            shared.forged_replies.increment(1);
            tracing::warn!(%id, %error, "refused a bridge reply: not sealed by a holder of the bridge secret");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No code holding these locks can panic half-way through a change: the maps stay consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
