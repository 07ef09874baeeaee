//! The local cache of active lookups, and the subscriber that keeps it honest.
//!
//! Verification is the hot path, and on the Redis store each one costs a round trip and an AEAD open.
//! This cache keeps the [`Grant`]s that `find` read as active, keyed by digest, so that the next
//! verification of the same token costs what the memory store's does. It must never let a revoked or
//! refreshed session be answered from memory beyond the cross-instance bound (100 ms), so:
//!
//! - **What is cached**: only [`Lookup::Active`](sidekey_application::Lookup::Active) grants, never a
//!   tombstone or a miss (an insert then needs no message). An entry lives at most
//!   [`LocalCacheSettings::max_age`] (a safety net), is never answered once its session's `expires_at`
//!   has passed by the store's clock (expiry needs no message: the answer falls through to Redis, which
//!   says expired), and the map holds at most [`LocalCacheSettings::capacity`] entries (beyond it,
//!   lookups simply are not cached). Each entry holds the decrypted real key, as the memory store does;
//!   removing the entry drops the cache's reference to it. A hit is keyed by the digest alone, as in
//!   the memory store: the service only ever derives digests from presented tokens (a digest read from
//!   a Redis dump cannot be presented), so the cache gives out nothing the token's holder could not
//!   open from Redis.
//! - **Invalidation**: every script that changes a session's answer (extend, revoke, bulk revocations)
//!   `PUBLISH`es the digests on `<prefix>:invalidations` from inside the script, atomically with the
//!   write (see `scripts`). One subscriber task per store, on a dedicated RESP3 connection, removes them.
//!   An instance also drops what it wrote itself as soon as its script returns (read-your-writes).
//! - **Used only while the subscription is known healthy**: a lookup is answered from memory only if
//!   the subscriber is subscribed *and* a heartbeat `PING` sent at most [`LEASE`] ago has been answered.
//!   Redis writes every message published before it read the `PING` ahead of the `PONG`, so once the
//!   `PONG` is in (and the messages before it applied), every revocation committed before the `PING` was
//!   sent is applied here. A connection that silently stops delivering (a partition, a stalled socket)
//!   therefore stops serving from memory within [`LEASE`], before anyone learns of the fault. On any
//!   error, disconnect or end of subscription the cache is marked unsubscribed and cleared; the
//!   subscriber reconnects with bounded backoff and clears again once re-subscribed, since messages may
//!   have been lost in between.
//! - **The read/insert race**: a `find` that read Redis before a revocation and would insert after the
//!   invalidation was applied would cache a revoked session for good. Each digest shard has a stamp,
//!   bumped by every invalidation (and every clear) *before* it removes anything. `find` takes a
//!   [`Ticket`] (the stamp) before its Redis read, and [`LocalCache::admit`] inserts only if the stamp is
//!   unchanged, checked under the map shard's write lock: an invalidation that bumps after that check
//!   removes the entry itself, since its removal waits for the lock.
//!
//! Redis Cluster: not supported, the cache is off (see the store's module docs).
//!
//! Metrics: `sidekey_redis_cache_hits_total`, `sidekey_redis_cache_misses_total` (lookups that went to
//! Redis while the cache is on), `sidekey_redis_cache_invalidations_total` (digests received),
//! `sidekey_redis_cache_resets_total` (clears on subscription loss or re-subscription), and the gauge
//! `sidekey_redis_cache_subscribed` (1 while the subscription stands).

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use metrics::{Counter, Gauge};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use sidekey_application::Grant;
use sidekey_domain::TokenDigest;
use tokio::sync::{mpsc, oneshot};

use super::keys::{self, SHARDS};

/// Default [`LocalCacheSettings::capacity`]: a hundred thousand grants is a few tens of MB at most, and
/// more distinct tokens than most deployments verify within [`DEFAULT_CACHE_MAX_AGE`].
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// Default [`LocalCacheSettings::max_age`]: the safety net under the invalidation messages (a bug or an
/// operator's hand edit in Redis cannot outlive it), long enough that an active token is read from
/// Redis only a couple of times a minute.
pub const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_secs(30);

/// How long after a heartbeat `PING` was sent its `PONG` keeps the cache usable. Well under the
/// 100 ms cross-instance revocation bound, so that even a connection that stopped delivering without
/// any error stops serving from memory in time; three heartbeats, so one late `PONG` under load does
/// not turn the cache off.
pub(crate) const LEASE: Duration = Duration::from_millis(60);

/// How often the subscriber sends a heartbeat `PING` (a sub-millisecond command: 50 a second).
const HEARTBEAT: Duration = Duration::from_millis(20);

/// How often entries past their age or their session's expiry are swept (the lookup path drops them
/// too, but only for tokens still presented).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Backoff between subscription attempts: the first retry is quick (a restarted Redis or a killed
/// connection is back at once), later ones slow down to a pace that costs a down Redis nothing.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A subscription that stood this long was healthy: the next loss starts the backoff from the minimum.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Whether and how much an instance caches (see the [store's docs](crate::store) for what the cache
/// guarantees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCacheSettings {
    /// Whether lookups are cached. Off: every verification reads Redis. The writes publish their
    /// invalidations either way, for the other instances.
    pub enabled: bool,
    /// Most grants held; lookups beyond it are not cached. 0 disables the cache.
    pub capacity: usize,
    /// Longest an entry is answered from memory, whatever the messages say.
    pub max_age: Duration,
}

impl Default for LocalCacheSettings {
    /// On, [`DEFAULT_CACHE_CAPACITY`], [`DEFAULT_CACHE_MAX_AGE`].
    fn default() -> Self {
        Self { enabled: true, capacity: DEFAULT_CACHE_CAPACITY, max_age: DEFAULT_CACHE_MAX_AGE }
    }
}

/// What the local cache is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCacheStatus {
    /// Whether this store caches at all (settings, and not on Redis Cluster).
    pub enabled: bool,
    /// Whether lookups are answered from memory now: subscribed, with a fresh heartbeat.
    pub live: bool,
    /// Grants held.
    pub entries: usize,
}

/// A cached grant.
struct Entry {
    grant: Grant,
    /// For [`LocalCacheSettings::max_age`]; monotonic, so wall-clock jumps do not stretch it.
    cached_at: Instant,
}

/// What a `find` took before reading Redis, to be shown to [`LocalCache::admit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    digest: TokenDigest,
    stamp: u64,
}

#[cfg(test)]
impl Ticket {
    /// Whether an invalidation of its shard (or a clear) has been applied since it was taken.
    pub(crate) fn overtaken_in(&self, cache: &LocalCache) -> bool {
        cache.stamps[usize::from(self.digest.shard())].load(Ordering::SeqCst) != self.stamp
    }
}

/// The cache proper; shared by the store and its subscriber task.
pub(crate) struct LocalCache {
    entries: DashMap<TokenDigest, Entry>,
    /// One per digest shard (first byte): bumped by every invalidation of a digest of the shard and by
    /// every clear, before the removal. Per shard rather than global so that a stream of revocations
    /// does not stop every concurrent `find` from caching.
    stamps: Box<[AtomicU64; SHARDS]>,
    /// Whether the subscription stands (confirmed by Redis, cache cleared after it). Tickets are handed
    /// out only while it does: nothing is cached that no message could invalidate.
    subscribed: AtomicBool,
    /// When the last answered heartbeat was sent, in nanoseconds after `origin` plus one; 0: none since
    /// the last subscription. Written by the subscriber only, after applying every message before it.
    confirmed: AtomicU64,
    origin: Instant,
    capacity: usize,
    max_age: Duration,
    hits: Counter,
    misses: Counter,
    invalidations: Counter,
    resets: Counter,
    subscribed_gauge: Gauge,
}

impl fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCache")
            .field("entries", &self.entries.len())
            .field("subscribed", &self.subscribed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl LocalCache {
    pub(crate) fn new(settings: &LocalCacheSettings) -> Self {
        Self {
            entries: DashMap::new(),
            stamps: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            subscribed: AtomicBool::new(false),
            confirmed: AtomicU64::new(0),
            origin: Instant::now(),
            capacity: settings.capacity,
            max_age: settings.max_age,
            hits: metrics::counter!("sidekey_redis_cache_hits_total"),
            misses: metrics::counter!("sidekey_redis_cache_misses_total"),
            invalidations: metrics::counter!("sidekey_redis_cache_invalidations_total"),
            resets: metrics::counter!("sidekey_redis_cache_resets_total"),
            subscribed_gauge: metrics::gauge!("sidekey_redis_cache_subscribed"),
        }
    }

    pub(crate) fn status(&self) -> LocalCacheStatus {
        LocalCacheStatus { enabled: true, live: self.is_live(Instant::now()), entries: self.entries.len() }
    }

    /// The grant cached under `digest`, if the cache is live and the entry neither too old nor its
    /// session expired at `now` (the store's clock).
    pub(crate) fn get(&self, digest: &TokenDigest, now: SystemTime) -> Option<Grant> {
        self.get_at(digest, now, Instant::now())
    }

    fn get_at(&self, digest: &TokenDigest, now: SystemTime, instant: Instant) -> Option<Grant> {
        if !self.is_live(instant) {
            self.misses.increment(1);
            return None;
        }
        let found = self.entries.get(digest).map(|entry| {
            let stale = instant.saturating_duration_since(entry.cached_at) >= self.max_age
                || entry.grant.session.is_expired_at(now);
            (!stale).then(|| entry.grant.clone())
        });
        match found {
            Some(Some(grant)) => {
                self.hits.increment(1);
                Some(grant)
            }
            Some(None) => {
                // The read guard is gone: removing now cannot deadlock on the shard's lock.
                self.entries.remove(digest);
                self.misses.increment(1);
                None
            }
            None => {
                self.misses.increment(1);
                None
            }
        }
    }

    /// Taken before a `find` reads Redis; `None` while unsubscribed (nothing read then may be cached).
    pub(crate) fn ticket(&self, digest: &TokenDigest) -> Option<Ticket> {
        // The stamp first: an unsubscription sets the flag before its clear bumps the stamps, so a
        // ticket whose stamp is newer than that bump cannot see the flag still set.
        let stamp = self.stamps[usize::from(digest.shard())].load(Ordering::SeqCst);
        self.subscribed.load(Ordering::SeqCst).then_some(Ticket { digest: *digest, stamp })
    }

    /// Caches `grant`, read from Redis after `ticket` was taken, unless an invalidation of its shard (or
    /// a clear) came in between, its session is already expired at `now`, or the cache is full.
    /// Returns whether it was cached.
    pub(crate) fn admit(&self, ticket: Ticket, grant: &Grant, now: SystemTime) -> bool {
        // Before the entry lock: `len` read-locks every map shard, the one about to be locked included.
        if grant.session.is_expired_at(now) || self.entries.len() >= self.capacity {
            return false;
        }
        let entry = self.entries.entry(ticket.digest);
        // Checked under the shard's write lock: an invalidation that bumps after this load removes the
        // entry once the lock is released.
        if self.stamps[usize::from(ticket.digest.shard())].load(Ordering::SeqCst) != ticket.stamp {
            return false;
        }
        entry.insert(Entry { grant: grant.clone(), cached_at: Instant::now() });
        true
    }

    /// Drops `digest`: bump, then remove (see [`LocalCache::admit`] for why in this order).
    pub(crate) fn invalidate(&self, digest: &TokenDigest) {
        self.stamps[usize::from(digest.shard())].fetch_add(1, Ordering::SeqCst);
        self.entries.remove(digest);
    }

    /// Applies one message's payload: space-separated digests in hex. Anything unreadable clears the
    /// whole cache, since it cannot say which entry it meant.
    fn invalidate_message(&self, payload: &[u8]) {
        let mut count = 0;
        for member in payload.split(|byte| *byte == b' ') {
            match keys::parse_member(member) {
                Some(digest) => {
                    self.invalidate(&digest);
                    count += 1;
                }
                None => {
                    tracing::warn!("an unreadable invalidation message: the local cache is cleared");
                    self.reset();
                    return;
                }
            }
        }
        self.invalidations.increment(count);
    }

    /// Drops everything: bump every stamp, then clear.
    pub(crate) fn reset(&self) {
        for stamp in self.stamps.iter() {
            stamp.fetch_add(1, Ordering::SeqCst);
        }
        self.entries.clear();
        self.resets.increment(1);
    }

    /// The subscription is confirmed: clear (messages may have been missed before it), then hand out
    /// tickets again. Lookups stay uncached until the first heartbeat is answered.
    fn subscribed(&self) {
        self.reset();
        self.subscribed.store(true, Ordering::SeqCst);
        self.subscribed_gauge.set(1.0);
    }

    /// The subscription is lost (or never was): stop serving and admitting, then clear.
    fn unsubscribed(&self) -> bool {
        self.confirmed.store(0, Ordering::SeqCst);
        let was = self.subscribed.swap(false, Ordering::SeqCst);
        self.reset();
        self.subscribed_gauge.set(0.0);
        was
    }

    /// A heartbeat sent at `sent` was answered, and every message before its answer applied.
    fn confirm(&self, sent: Instant) {
        let since = u64::try_from(sent.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        self.confirmed.fetch_max(since.saturating_add(1), Ordering::Release);
    }

    fn is_live(&self, instant: Instant) -> bool {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        if confirmed == 0 {
            return false;
        }
        let sent = self.origin + Duration::from_nanos(confirmed - 1);
        instant.saturating_duration_since(sent) <= LEASE
    }

    /// Drops entries past their age or their session's expiry at `now`, and gives memory back once
    /// the map is mostly empty (a hash table never shrinks by itself).
    fn sweep(&self, now: SystemTime) {
        let instant = Instant::now();
        let before = self.entries.len();
        self.entries.retain(|_, entry| {
            instant.saturating_duration_since(entry.cached_at) < self.max_age
                && !entry.grant.session.is_expired_at(now)
        });
        let after = self.entries.len();
        if after < before && after.saturating_mul(4) < self.entries.capacity() {
            self.entries.shrink_to_fit();
        }
    }
}

/// The subscriber task's means: a RESP3 client for the store's server, the channel, the timeouts.
pub(crate) struct Subscriber {
    pub(crate) client: redis::Client,
    pub(crate) channel: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) clock: std::sync::Arc<dyn sidekey_application::Clock>,
}

impl Subscriber {
    /// Starts the task; it stops when the returned sender is dropped (with the store).
    pub(crate) fn spawn(self, cache: std::sync::Arc<LocalCache>) -> oneshot::Sender<()> {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(async move { self.run(&cache, stopped).await });
        stop
    }

    async fn run(self, cache: &LocalCache, mut stopped: oneshot::Receiver<()>) {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let lost = tokio::select! {
                _ = &mut stopped => break,
                Err(lost) = self.listen(cache) => lost,
            };
            if cache.unsubscribed() {
                tracing::warn!(cause = %lost, "invalidation subscription lost: local cache cleared and off");
                failures = 0;
            } else if failures == 0 {
                tracing::warn!(cause = %lost, "invalidation subscription failed: local cache off, retrying");
            } else {
                tracing::debug!(cause = %lost, failures, "invalidation subscription failed again");
            }
            failures = failures.saturating_add(1);
            if started.elapsed() >= STABLE_AFTER {
                backoff = BACKOFF_MIN;
            }
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
        }
        cache.unsubscribed();
    }

    /// Subscribes and serves the subscription until it fails; returns why.
    async fn listen(&self, cache: &LocalCache) -> Result<Infallible, String> {
        let (sender, mut pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_push_sender(sender);
        let connecting = self.client.get_multiplexed_async_connection_with_config(&config);
        let mut connection = tokio::time::timeout(self.connect_timeout + self.command_timeout, connecting)
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|error| format!("connecting failed: {error}"))?;
        tokio::time::timeout(self.command_timeout, connection.subscribe(&self.channel))
            .await
            .map_err(|_| "SUBSCRIBE timed out".to_owned())?
            .map_err(|error| format!("SUBSCRIBE failed: {error}"))?;
        cache.subscribed();
        tracing::info!("invalidation subscription established: local cache on");
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                push = pushes.recv() => apply(cache, push)?,
                _ = heartbeat.tick() => self.beat(cache, &connection, &mut pushes).await?,
                _ = sweep.tick() => cache.sweep(self.clock.now()),
            }
        }
    }

    /// One heartbeat: `PING`, applying messages while waiting, then the messages that came before the
    /// `PONG`, then renew the lease from the moment the `PING` was sent.
    async fn beat(
        &self,
        cache: &LocalCache,
        connection: &MultiplexedConnection,
        pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
    ) -> Result<(), String> {
        let sent = Instant::now();
        let mut connection = connection.clone();
        let ping = tokio::time::timeout(self.command_timeout, async move {
            redis::cmd("PING").query_async::<Value>(&mut connection).await
        });
        tokio::pin!(ping);
        loop {
            tokio::select! {
                biased;
                push = pushes.recv() => apply(cache, push)?,
                answer = &mut ping => {
                    answer
                        .map_err(|_| "the heartbeat PING timed out".to_owned())?
                        .map_err(|error| format!("the heartbeat PING failed: {error}"))?;
                    break;
                }
            }
        }
        // The connection handed every push that preceded the PONG to `pushes` before completing the
        // PING: they are all in the queue now.
        while let Ok(push) = pushes.try_recv() {
            apply(cache, Some(push))?;
        }
        cache.confirm(sent);
        Ok(())
    }
}

/// Applies one push from the subscription connection; an error means the subscription is gone.
fn apply(cache: &LocalCache, push: Option<PushInfo>) -> Result<(), String> {
    let Some(PushInfo { kind, data }) = push else {
        return Err("the connection closed".to_owned());
    };
    match kind {
        PushKind::Message => {
            match data.get(1) {
                Some(Value::BulkString(payload)) => cache.invalidate_message(payload),
                _ => {
                    tracing::warn!("an invalidation message without a payload: the local cache is cleared");
                    cache.reset();
                }
            }
            Ok(())
        }
        PushKind::Disconnection => Err("the connection dropped".to_owned()),
        PushKind::Unsubscribe => Err("the server ended the subscription".to_owned()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sidekey_domain::{Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy};

    use super::*;

    fn cache(capacity: usize) -> LocalCache {
        LocalCache::new(&LocalCacheSettings { enabled: true, capacity, max_age: Duration::from_secs(30) })
    }

    /// A cache as the subscriber leaves it when healthy: subscribed, heartbeat answered just now.
    fn live(capacity: usize) -> LocalCache {
        let cache = cache(capacity);
        cache.subscribed();
        cache.confirm(Instant::now());
        cache
    }

    fn digest(first: u8, rest: u8) -> TokenDigest {
        let mut bytes = [rest; 32];
        bytes[0] = first;
        TokenDigest::from_bytes(bytes)
    }

    fn grant(now: SystemTime, ttl: u64) -> Grant {
        let session = Session::issue(
            SessionId::new_random(),
            SecretRef::parse("openai-prod").unwrap(),
            None,
            Metadata::default(),
            SessionPolicy::default().ttl(Some(ttl)).unwrap(),
            now,
        );
        Grant { session, secret: Arc::new(SecretValue::new("sk-live-cached".to_owned()).unwrap()) }
    }

    #[test]
    fn an_admitted_grant_is_served_until_it_is_invalidated() {
        let (cache, now, d) = (live(10), SystemTime::now(), digest(1, 1));
        assert!(cache.get(&d, now).is_none());
        let ticket = cache.ticket(&d).unwrap();
        assert!(cache.admit(ticket, &grant(now, 60), now));
        let served = cache.get(&d, now).expect("served from memory");
        assert_eq!(served.secret.expose(), "sk-live-cached");
        cache.invalidate(&d);
        assert!(cache.get(&d, now).is_none());
        assert_eq!(cache.status().entries, 0);
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_cached() {
        // The race: the find took its ticket and read Redis (active), then the revocation's message was
        // applied, then the find tries to cache what it read.
        let (cache, now, d) = (live(10), SystemTime::now(), digest(7, 1));
        let ticket = cache.ticket(&d).unwrap();
        cache.invalidate(&d);
        assert!(!cache.admit(ticket, &grant(now, 60), now));
        assert!(cache.get(&d, now).is_none());
        // Another digest of the same shard invalidated: refused too (stamps are per shard, a miss is safe).
        let ticket = cache.ticket(&d).unwrap();
        cache.invalidate(&digest(7, 2));
        assert!(!cache.admit(ticket, &grant(now, 60), now));
        // Another shard's invalidation does not stand in the way; a fresh ticket is admitted.
        let ticket = cache.ticket(&d).unwrap();
        cache.invalidate(&digest(8, 1));
        assert!(cache.admit(ticket, &grant(now, 60), now));
        assert!(cache.get(&d, now).is_some());
    }

    #[test]
    fn a_read_overtaken_by_a_loss_of_subscription_is_not_cached_and_nothing_is_admitted_while_unsubscribed() {
        let (cache, now, d) = (live(10), SystemTime::now(), digest(3, 3));
        let ticket = cache.ticket(&d).unwrap();
        cache.unsubscribed();
        assert!(cache.ticket(&d).is_none(), "no tickets while unsubscribed");
        // Re-subscribed before the find came back: the clear on re-subscription still refuses it.
        cache.subscribed();
        cache.confirm(Instant::now());
        assert!(!cache.admit(ticket, &grant(now, 60), now));
        assert!(cache.get(&d, now).is_none());
    }

    #[test]
    fn losing_the_subscription_clears_everything_and_serves_nothing() {
        let (cache, now) = (live(10), SystemTime::now());
        for i in 0..5 {
            let d = digest(i, i);
            assert!(cache.admit(cache.ticket(&d).unwrap(), &grant(now, 60), now));
        }
        assert_eq!(cache.status().entries, 5);
        assert!(cache.unsubscribed());
        let status = cache.status();
        assert!(!status.live);
        assert_eq!(status.entries, 0);
        assert!(cache.get(&digest(1, 1), now).is_none());
    }

    #[test]
    fn the_cache_serves_only_within_the_lease_of_the_last_answered_heartbeat() {
        let (cache, now, d) = (cache(10), SystemTime::now(), digest(5, 5));
        cache.subscribed();
        assert!(cache.admit(cache.ticket(&d).unwrap(), &grant(now, 60), now));
        let sent = Instant::now();
        assert!(cache.get_at(&d, now, sent).is_none(), "subscribed but no heartbeat answered yet");
        cache.confirm(sent);
        assert!(cache.get_at(&d, now, sent + LEASE).is_some(), "at the lease's end");
        assert!(cache.get_at(&d, now, sent + LEASE + Duration::from_millis(1)).is_none(), "past it");
        // A later heartbeat renews it; an earlier one answered late never moves it back.
        cache.confirm(sent + LEASE);
        cache.confirm(sent);
        assert!(cache.get_at(&d, now, sent + LEASE * 2).is_some());
    }

    #[test]
    fn an_expired_or_old_entry_is_not_served_and_is_dropped() {
        let (cache, now) = (live(10), SystemTime::now());
        let d = digest(9, 9);
        assert!(cache.admit(cache.ticket(&d).unwrap(), &grant(now, 60), now));
        assert!(cache.get(&d, now + Duration::from_secs(59)).is_some());
        assert!(cache.get(&d, now + Duration::from_secs(60)).is_none(), "expires_at is inclusive");
        assert_eq!(cache.status().entries, 0, "dropped on the way");
        // Already expired when read: not admitted at all.
        assert!(!cache.admit(cache.ticket(&d).unwrap(), &grant(now, 60), now + Duration::from_secs(60)));
        // Past max_age.
        let short = LocalCache::new(&LocalCacheSettings {
            enabled: true,
            capacity: 10,
            max_age: Duration::from_millis(1),
        });
        short.subscribed();
        assert!(short.admit(short.ticket(&d).unwrap(), &grant(now, 60), now));
        std::thread::sleep(Duration::from_millis(2));
        short.confirm(Instant::now());
        assert!(short.get(&d, now).is_none());
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_the_sweep_drops_what_ended() {
        let (cache, now) = (live(3), SystemTime::now());
        let admitted = (0..5u8)
            .filter(|i| {
                let d = digest(*i, 0);
                cache.admit(cache.ticket(&d).unwrap(), &grant(now, 10 + u64::from(*i)), now)
            })
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(cache.status().entries, 3);
        cache.sweep(now + Duration::from_secs(11));
        assert_eq!(cache.status().entries, 1, "the sessions expired by then are swept");
    }

    #[test]
    fn a_message_names_digests_and_an_unreadable_one_clears_all() {
        let (cache, now) = (live(10), SystemTime::now());
        let (a, b, c) = (digest(1, 0xaa), digest(2, 0xbb), digest(3, 0xcc));
        for d in [a, b, c] {
            assert!(cache.admit(cache.ticket(&d).unwrap(), &grant(now, 60), now));
        }
        let message = format!("{} {}", keys::member(&a), keys::member(&b));
        cache.invalidate_message(message.as_bytes());
        assert!(cache.get(&a, now).is_none() && cache.get(&b, now).is_none());
        assert!(cache.get(&c, now).is_some());
        cache.invalidate_message(b"not a digest");
        assert_eq!(cache.status().entries, 0);
    }
}
