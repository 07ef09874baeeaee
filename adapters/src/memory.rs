//! [`InMemorySessionStore`]: the [`SessionStore`] for a single instance, in this process's memory.
//!
//! Sessions live only as long as the process: a restart ends them all. Deployments with more than one
//! instance, or whose sessions must survive a restart, need a shared store (Redis) instead.
//!
//! # Design
//! Verification is the hot path: every proxied request looks its token up. Everything else (issue,
//! refresh, revoke, admin listings) is rarer by orders of magnitude. The structures follow from that.
//!
//! - **`sessions`**: `DashMap<TokenDigest, Stored>`, the primary map. DashMap shards its table behind
//!   one read-write lock per shard, so concurrent [`find`](SessionStore::find)s on different tokens never
//!   meet on a lock, and a writer blocks only the shard it writes to. `find` touches nothing else: no
//!   global mutex, no clock, no index. A [`Stored`] is either an active [`Grant`] or a [`Tombstone`]
//!   saying how the session ended (revoked or expired): the port asks stores to tell a client why its
//!   token stopped working for [`ENDED_SESSION_RETENTION`] after its expiry. The tombstone drops the
//!   grant, and with it this session's reference to the real key, the moment the session ends.
//! - **`ids`**: `DashMap<SessionId, TokenDigest>`, because admins revoke by session id and the primary
//!   map is keyed by digest. It lives exactly as long as the primary entry (inserted on insert, removed
//!   on purge), so a tombstone's id still leads to the tombstone and a second revocation answers `false`.
//! - **`deadlines`**: `Mutex<BTreeSet<(SystemTime, TokenDigest)>>`, expiry as data (the mini-redis
//!   design). Ordered by time, so the purge finds what expired by popping the front instead of scanning
//!   every session. Only writers (insert, extend) and the purge take its mutex, never `find`. Each
//!   entry's own due time ([`Stored::due_at`]: an active session's expiry, a tombstone's expiry plus
//!   the retention) is the authority; the index is a schedule that may hold a stale deadline
//!   for a moment (see `Shared::purge_batch`) but holds every stored entry's current one from the moment
//!   the write that set it returns.
//! - **One purge task**, woken by a [`Notify`] when a deadline earlier than all others is scheduled, and
//!   otherwise sleeping until the earliest deadline. It reads time from the [`Clock`] port, so tests
//!   control it, and caps each sleep at [`MAX_PURGE_SLEEP`] because the wall clock can jump while tokio's
//!   timer runs on the monotonic one. After a purge it shrinks the maps when they have emptied out:
//!   hash tables never give memory back on their own, and the port requires expired sessions' memory to
//!   be released without anyone asking.
//! - Listing and bulk revocation (by `secret_key_id` or subject) scan the primary map shard by shard.
//!   They are rare admin operations (a key rotation, a user ban); a secondary index per secret and per
//!   subject would tax every insert to speed them up.
//! - A session past its `expires_at` but not yet purged is still returned by `find` (the port allows
//!   it, and checking would put the clock on the hot path), but `extend`, the revocations and `list`
//!   treat it as gone, as a backend with native expiry would: the purge's timing never changes an answer.
//!
//! The task holds only a [`Weak`] reference to the store's state and a shutdown receiver whose sender the
//! store owns, so dropping the store stops the task and frees the sessions.
//!
//! Nothing here logs a token, a digest or a secret: the only events are counts.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use metrics::Gauge;
use sidekey_application::{
    Clock, ENDED_SESSION_RETENTION, Grant, Lookup, RevocationTarget, SessionFilter, SessionStore, StoreError,
};
use sidekey_domain::{Session, SessionId, SessionParts, TokenDigest, TokenKeys};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Longest the purge task sleeps before looking at the clock again. The task sleeps on tokio's monotonic
/// timer but deadlines are wall-clock times from the [`Clock`] port; one second bounds how late a purge
/// runs after the wall clock jumps forward (NTP step, VM resume), at the cost of one wake-up a second
/// while sessions are pending.
pub const MAX_PURGE_SLEEP: Duration = Duration::from_secs(1);

/// How many deadlines a purge takes from the index per lock. Small enough that an insert waits at most
/// a fraction of a millisecond for the index while a million sessions expire, large enough that the
/// lock is not taken once per session.
const PURGE_BATCH: usize = 4096;

/// What one purge batch did.
struct PurgeBatch {
    /// Deadlines taken from the index: a full batch means more may be due.
    popped: usize,
    /// Tombstones removed from the maps (their memory given back).
    forgotten: usize,
}

/// Capacity below which a map is not worth shrinking: a few hundred KiB at most, and shrinking it would
/// only make the next inserts grow it again.
const SHRINK_FLOOR: usize = 4096;

/// The name of the gauge counting active (stored, not revoked) sessions. Expired sessions count until
/// they are purged, which is what the memory actually holds.
pub const LIVE_SESSIONS_GAUGE: &str = "sidekey_sessions_live";

/// A session store in this process's memory; see the [module documentation](self) for its design.
///
/// Not `Clone`: share it as `Arc<InMemorySessionStore>` (which coerces to `Arc<dyn SessionStore>`).
/// Dropping it stops its purge task.
pub struct InMemorySessionStore {
    shared: Arc<Shared>,
    /// Never sent on: dropping the store drops it, and the purge task takes the closed channel as its
    /// signal to stop at once (rather than at its next wake-up, when it would find the state gone).
    _shutdown: oneshot::Sender<()>,
}

/// The state shared between the store and its purge task.
struct Shared {
    /// The primary map, read by every verification. Why DashMap: see the module docs.
    sessions: DashMap<TokenDigest, Stored>,
    /// Session id → digest, for revocation by id.
    ids: DashMap<SessionId, TokenDigest>,
    /// The expiry schedule. A `std` mutex, not tokio's: it is never held across an `.await`, and every
    /// critical section is a few B-tree operations (or one bounded purge batch).
    deadlines: Mutex<BTreeSet<(SystemTime, TokenDigest)>>,
    /// Wakes the purge task when a deadline earlier than every scheduled one appears, so it does not
    /// oversleep. `notify_one` keeps a permit when the task is busy, so no wake-up is lost. In its own
    /// `Arc` because the task waits on it while holding only a `Weak` to the rest.
    wake: Arc<Notify>,
    /// Where "now" comes from, for expiry and purging alike.
    clock: Arc<dyn Clock>,
    /// [`LIVE_SESSIONS_GAUGE`], resolved once so that the writers pay no registry lookup.
    live: Gauge,
}

/// What the primary map keeps under a digest.
enum Stored {
    /// A session that has not ended (possibly expired a moment ago and not yet seen by the purge).
    Active(Grant),
    /// A session that ended, kept without its real key so that `find` can say how.
    Ended(Tombstone),
}

/// What remains of an ended session: how it ended, and enough to forget it on time and unlink its id.
struct Tombstone {
    id: SessionId,
    expires_at: SystemTime,
    ending: Ending,
}

/// How a session ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Revoked,
    Expired,
}

impl Stored {
    fn id(&self) -> SessionId {
        match self {
            Self::Active(grant) => grant.session.id(),
            Self::Ended(tombstone) => tombstone.id,
        }
    }

    /// When the purge must next act on this entry: end an active session at its expiry; forget a
    /// tombstone [`ENDED_SESSION_RETENTION`] after the session's expiry.
    fn due_at(&self) -> SystemTime {
        match self {
            Self::Active(grant) => grant.session.expires_at(),
            Self::Ended(tombstone) => tombstone.expires_at + ENDED_SESSION_RETENTION,
        }
    }

    /// What `find` answers for this entry.
    fn lookup(&self) -> Lookup {
        match self {
            Self::Active(grant) => Lookup::Active(grant.clone()),
            Self::Ended(Tombstone { ending: Ending::Revoked, .. }) => Lookup::Revoked,
            Self::Ended(Tombstone { ending: Ending::Expired, .. }) => Lookup::Expired,
        }
    }

    /// The session if it is active and not expired at `now`: what the admin operations act on.
    fn live_at(&self, now: SystemTime) -> Option<&Session> {
        match self {
            Self::Active(grant) if !grant.session.is_expired_at(now) => Some(&grant.session),
            _ => None,
        }
    }
}

impl InMemorySessionStore {
    /// An empty store whose purge task reads time from `clock`.
    ///
    /// The [`LIVE_SESSIONS_GAUGE`] handle is resolved here, so install the metrics recorder first.
    ///
    /// # Panics
    /// Outside a tokio runtime, because it spawns the purge task.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::start(clock).0
    }

    /// [`new`](Self::new), also returning the purge task's handle (for tests of its shutdown).
    fn start(clock: Arc<dyn Clock>) -> (Self, JoinHandle<()>) {
        let shared = Arc::new(Shared {
            sessions: DashMap::new(),
            ids: DashMap::new(),
            deadlines: Mutex::new(BTreeSet::new()),
            wake: Arc::new(Notify::new()),
            clock,
            live: metrics::gauge!(LIVE_SESSIONS_GAUGE),
        });
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(purge_task(Arc::downgrade(&shared), Arc::clone(&shared.wake), stopped));
        (Self { shared, _shutdown: shutdown }, task)
    }

    /// Removes every session and tombstone whose expiry has passed at the clock's now, then releases
    /// the maps' spare memory if they have emptied out. Returns how many entries it removed.
    ///
    /// The purge task calls this on its own; it is public for tests and for callers that want memory
    /// back at a moment of their choosing.
    pub fn purge_expired(&self) -> usize {
        let now = self.shared.clock.now();
        let mut forgotten = 0;
        loop {
            let batch = self.shared.purge_batch(now);
            forgotten += batch.forgotten;
            if batch.popped < PURGE_BATCH {
                break;
            }
        }
        self.shared.after_purge(forgotten);
        forgotten
    }

    /// Entries stored, tombstones included.
    pub fn len(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Whether nothing is stored, not even a tombstone.
    pub fn is_empty(&self) -> bool {
        self.shared.sessions.is_empty()
    }

    /// How many entries the primary map can hold without growing: what its table occupies.
    pub fn capacity(&self) -> usize {
        self.shared.sessions.capacity()
    }
}

impl fmt::Debug for InMemorySessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemorySessionStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn deadlines(&self) -> MutexGuard<'_, BTreeSet<(SystemTime, TokenDigest)>> {
        // A panic while holding this lock cannot leave the set half-modified in a way that matters:
        // at worst a deadline is missing or stale, and stale ones are tolerated (see `purge_batch`).
        self.deadlines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `digest` on the schedule at `at` (replacing `previous` if it moved), and wakes the purge
    /// task if that is now the earliest deadline.
    fn schedule(&self, digest: TokenDigest, at: SystemTime, previous: Option<SystemTime>) {
        let earliest = {
            let mut deadlines = self.deadlines();
            if let Some(previous) = previous {
                deadlines.remove(&(previous, digest));
            }
            let earliest = deadlines.first().is_none_or(|&(first, _)| at < first);
            deadlines.insert((at, digest));
            earliest
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Acts on up to [`PURGE_BATCH`] deadlines at or before `now` (the boundary is inclusive, as in
    /// [`Session::is_expired_at`]): an active session whose expiry passed becomes an `Expired`
    /// tombstone (its real key dropped) due again [`ENDED_SESSION_RETENTION`] later; a tombstone whose
    /// retention passed is forgotten.
    ///
    /// Deadlines are taken from the index under its lock, and the maps are touched after releasing it,
    /// so no thread ever holds the index while waiting for a shard. Each entry's own [`Stored::due_at`]
    /// decides: a refresh may have moved an active session after its deadline was scheduled (the popped
    /// deadline is stale and the refresh scheduled the new one), and a revocation leaves the old
    /// deadline in place for the purge to move to the tombstone's.
    fn purge_batch(&self, now: SystemTime) -> PurgeBatch {
        let mut due = Vec::with_capacity(PURGE_BATCH);
        {
            let mut deadlines = self.deadlines();
            while due.len() < PURGE_BATCH
                && let Some(&(at, digest)) = deadlines.first()
                && at <= now
            {
                deadlines.pop_first();
                due.push(digest);
            }
        }
        let mut batch = PurgeBatch { popped: due.len(), forgotten: 0 };
        let mut ended = 0u32;
        let mut later = Vec::new();
        for digest in due {
            let forgotten = self
                .sessions
                .remove_if(&digest, |_, stored| matches!(stored, Stored::Ended(_)) && stored.due_at() <= now);
            if let Some((_, stored)) = forgotten {
                self.ids.remove_if(&stored.id(), |_, linked| *linked == digest);
                batch.forgotten += 1;
                continue;
            }
            let grant = {
                let Some(mut stored) = self.sessions.get_mut(&digest) else { continue };
                match &*stored {
                    Stored::Active(grant) if grant.session.is_expired_at(now) => {
                        let tombstone = Tombstone {
                            id: grant.session.id(),
                            expires_at: grant.session.expires_at(),
                            ending: Ending::Expired,
                        };
                        let grant = std::mem::replace(&mut *stored, Stored::Ended(tombstone));
                        later.push((digest, stored.due_at()));
                        grant
                    }
                    // A revocation's tombstone, reached at the session's original expiry.
                    Stored::Ended(_) => {
                        later.push((digest, stored.due_at()));
                        continue;
                    }
                    // Refreshed since this deadline was scheduled: the refresh scheduled the new one.
                    Stored::Active(_) => continue,
                }
            };
            // Dropped after the shard lock is released (zeroing the key is not a reader's wait).
            drop(grant);
            ended += 1;
        }
        if ended > 0 {
            self.live.decrement(f64::from(ended));
            tracing::debug!(ended, "ended expired sessions");
        }
        if !later.is_empty() {
            let mut deadlines = self.deadlines();
            deadlines.extend(later.into_iter().map(|(digest, at)| (at, digest)));
        }
        batch
    }

    /// Releases the maps' spare memory once they hold less than a quarter of what their tables can
    /// (the hysteresis keeps a steady load from shrinking and regrowing the tables over and over).
    fn after_purge(&self, purged: usize) {
        if purged == 0 {
            return;
        }
        shrink_if_sparse(&self.sessions);
        shrink_if_sparse(&self.ids);
        tracing::debug!(purged, remaining = self.sessions.len(), "purged expired sessions");
    }

    /// When the purge task should next look, from the clock's now.
    fn next_wake(&self) -> Option<Duration> {
        let earliest = self.deadlines().first().map(|&(at, _)| at)?;
        let wait = earliest.duration_since(self.clock.now()).unwrap_or(Duration::ZERO);
        Some(wait.min(MAX_PURGE_SLEEP))
    }

    /// Revokes the session under `digest` if it is live at `now`; returns whether it did.
    fn revoke(&self, digest: &TokenDigest, now: SystemTime) -> bool {
        let grant = {
            let Some(mut stored) = self.sessions.get_mut(digest) else {
                return false;
            };
            let Some(session) = stored.live_at(now) else {
                return false;
            };
            let tombstone =
                Tombstone { id: session.id(), expires_at: session.expires_at(), ending: Ending::Revoked };
            std::mem::replace(&mut *stored, Stored::Ended(tombstone))
        };
        // Dropped after the shard lock is released: if this was the last reference to the real key,
        // zeroing it is work that a verification on the same shard need not wait for.
        drop(grant);
        self.live.decrement(1.0);
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The gauge is process-wide; sessions that vanish with the store must leave it too.
        let active = self.sessions.iter().filter(|entry| matches!(entry.value(), Stored::Active(_))).count();
        if active > 0 {
            self.live.decrement(active as f64);
        }
    }
}

fn shrink_if_sparse<K, V>(map: &DashMap<K, V>)
where
    K: Eq + std::hash::Hash,
{
    let capacity = map.capacity();
    if capacity > SHRINK_FLOOR && map.len() < capacity / 4 {
        map.shrink_to_fit();
    }
}

/// The purge loop: purge what is due, then sleep until the next deadline (capped), an earlier deadline's
/// notification, or the store's drop.
async fn purge_task(shared: Weak<Shared>, wake: Arc<Notify>, mut stopped: oneshot::Receiver<()>) {
    loop {
        let Some(wait) = purge_due(&shared).await else { return };
        let woken = async {
            match wait {
                Some(wait) => {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => wake.notified().await,
            }
        };
        tokio::select! {
            _ = &mut stopped => return,
            () = woken => {}
        }
    }
}

/// One round of the purge task: everything due at the clock's now, in batches. Returns when to look
/// next (`Some(None)`: only when notified), or `None` once the store is gone.
async fn purge_due(shared: &Weak<Shared>) -> Option<Option<Duration>> {
    // The strong reference lives only while purging, never across the task's sleep: the store's drop
    // frees the sessions even while the task waits.
    let shared = shared.upgrade()?;
    let now = shared.clock.now();
    let mut purged = 0;
    loop {
        let batch = shared.purge_batch(now);
        purged += batch.forgotten;
        if batch.popped < PURGE_BATCH {
            break;
        }
        // A million sessions expiring together must not hold this worker thread for the whole purge.
        tokio::task::yield_now().await;
    }
    shared.after_purge(purged);
    Some(shared.next_wake())
}

#[async_trait]
impl SessionStore for InMemorySessionStore {
    async fn insert(&self, keys: &TokenKeys, grant: Grant) -> Result<(), StoreError> {
        // The sealing key is for stores that keep data outside this process; memory needs no sealing.
        let digest = *keys.digest();
        let (id, expires_at) = (grant.session.id(), grant.session.expires_at());
        match self.shared.sessions.entry(digest) {
            // A tombstone counts: a revoked token must never come back under a new session.
            Entry::Occupied(_) => return Err(StoreError::Conflict),
            Entry::Vacant(vacant) => {
                vacant.insert(Stored::Active(grant));
            }
        }
        // Linked and scheduled after the shard lock is released. Until then the entry is simply not
        // yet revocable by id nor purgeable, which no caller can observe: insert has not returned.
        // Ids are random v4 UUIDs; a collision (2^-122) would only make the older one unrevocable by id.
        self.shared.ids.insert(id, digest);
        self.shared.schedule(digest, expires_at, None);
        self.shared.live.increment(1.0);
        Ok(())
    }

    async fn find(&self, keys: &TokenKeys) -> Result<Lookup, StoreError> {
        let digest = keys.digest();
        // One shard read lock, one clone of reference counts: nothing else on the verification path.
        Ok(self.shared.sessions.get(digest).map_or(Lookup::Missing, |stored| stored.lookup()))
    }

    async fn extend(&self, keys: &TokenKeys, expires_at: SystemTime) -> Result<Lookup, StoreError> {
        let digest = keys.digest();
        let now = self.shared.clock.now();
        let (grant, previous) = {
            let Some(mut stored) = self.shared.sessions.get_mut(digest) else {
                return Ok(Lookup::Missing);
            };
            let grant = match &mut *stored {
                Stored::Ended(_) => return Ok(stored.lookup()),
                Stored::Active(grant) => grant,
            };
            // Expired but not yet seen by the purge is expired as far as callers can tell: refreshing it
            // would resurrect it just because the purge task had not come round yet.
            if grant.session.is_expired_at(now) {
                return Ok(Lookup::Expired);
            }
            let previous = grant.session.expires_at();
            if previous == expires_at {
                return Ok(Lookup::Active(grant.clone()));
            }
            // The domain refuses an expiry before issue; such a request leaves the session as it is.
            let Ok(moved) = Session::from_parts(SessionParts { expires_at, ..grant.session.to_parts() })
            else {
                return Ok(Lookup::Active(grant.clone()));
            };
            grant.session = moved;
            (grant.clone(), previous)
        };
        // Rescheduled after the shard lock is released, so a verification on this shard never waits for
        // the index. Safe against a concurrent purge: it checks the entry's own (new) expiry before
        // removing, and the new deadline is on the schedule before this returns.
        self.shared.schedule(*digest, expires_at, Some(previous));
        Ok(Lookup::Active(grant))
    }

    async fn revoke(&self, digest: &TokenDigest) -> Result<bool, StoreError> {
        Ok(self.shared.revoke(digest, self.shared.clock.now()))
    }

    async fn revoke_by_id(&self, id: SessionId) -> Result<bool, StoreError> {
        // Copy the digest out so the `ids` shard lock is not held while the primary shard is locked.
        let Some(digest) = self.shared.ids.get(&id).map(|linked| *linked) else {
            return Ok(false);
        };
        Ok(self.shared.revoke(&digest, self.shared.clock.now()))
    }

    async fn revoke_matching(&self, target: &RevocationTarget) -> Result<u64, StoreError> {
        // A scan, shard by shard under read locks (rare admin operation; see the module docs). The
        // digests are collected first because revoking needs a write lock on a shard the iterator
        // would still hold; each revocation re-checks its entry, so the count is exactly the sessions
        // this call revoked, even if others revoke or refresh concurrently.
        let now = self.shared.clock.now();
        let selected: Vec<TokenDigest> = self
            .shared
            .sessions
            .iter()
            .filter(|entry| entry.value().live_at(now).is_some_and(|session| target.matches(session)))
            .map(|entry| *entry.key())
            .collect();
        let revoked = selected.iter().filter(|digest| self.shared.revoke(digest, now)).count();
        Ok(revoked as u64)
    }

    async fn list(&self, filter: &SessionFilter, limit: usize) -> Result<Vec<Session>, StoreError> {
        // A scan, shard by shard under read locks (rare admin operation; see the module docs).
        let now = self.shared.clock.now();
        Ok(self
            .shared
            .sessions
            .iter()
            .filter_map(|entry| entry.value().live_at(now).filter(|session| filter.matches(session)).cloned())
            .take(limit)
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Memory cannot be unreachable.
        Ok(())
    }
}

#[cfg(test)]
mod tests;
