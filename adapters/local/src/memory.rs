//! [`InMemorySessionStore`]: the [`SessionStore`] for a single instance, in this process's memory.
//!
//! Sessions live only as long as the process: a restart ends them all. Deployments with more than one
//! instance, or whose sessions must survive a restart, need a shared store (Redis) instead.
//!
//! # Design
//! Verification is the hot path: every proxied request looks its token up. Everything else (issue,
//! refresh, revoke, admin listings) is rarer by orders of magnitude. And a busy instance holds a great
//! many live sessions, so each must be small. The structures follow from that.
//!
//! - **One map**: `DashMap<IdKey, Entry>`. DashMap shards its table behind one read-write lock per
//!   shard, so concurrent [`find`](SessionStore::find)s on different tokens never meet on a lock, and a
//!   writer blocks only the shard it writes to. There is no second index: an expiry schedule would cost
//!   about as much as the sessions themselves (about 75 bytes a session) to speed up the purge, which
//!   scans once a second at most instead.
//! - **The key** is the session id, which the application derives from the token's SHA-256 digest
//!   ([`SessionId::of_token`]): 122 bits of the digest, so `find` computes it from the token and
//!   `revoke_by_id` uses it as it comes, and no entry keeps an id beside its key. Tokens carry 256
//!   random bits, so two live sessions share a key with probability about n²/2¹²³, and finding a token
//!   for a given key is a 2¹²² second-preimage search. The key is already uniformly random, so the map
//!   hashes it by folding its bytes (`IdKeyHasher`) instead of running SipHash; an attacker cannot
//!   choose the keys that are stored (only issued tokens are), so there is nothing to flood.
//! - **An entry** is 32 bytes: issue and expiry times and the TTL as integers, and one shared
//!   `Profile` (the `secret_key_id`, subject and real key, and the `Terms` of a session that has
//!   metadata, a sign-in binding, a scope or limits); with its key, a table slot is 48 bytes. Plain
//!   sessions that share all three share one profile: issuing the same key to many users' sessions stores the key once per
//!   subject, not once per session. An ended session (a tombstone, kept so `find` can say how it
//!   ended for [`ENDED_SESSION_RETENTION`] after its expiry) has no profile: the real key is dropped
//!   the moment the session ends.
//! - **The purge** is a scan, run by one task when the earliest due time has passed (an atomic that
//!   writers lower and each scan recomputes) and at most every [`MAX_PURGE_SLEEP`]. It reads under
//!   shard read locks and takes a write lock only per entry it changes; a million sessions take a few
//!   milliseconds. It reads time from the [`Clock`] port, so tests control it, and shrinks the map when
//!   it has emptied out: hash tables never give memory back on their own, and the port requires expired
//!   sessions' memory to be released without anyone asking.
//! - Listing and bulk revocation scan the map shard by shard: rare admin operations (a key rotation, a
//!   user ban) that an index would tax every insert to speed up.
//! - A session past its `expires_at` but not yet purged is still returned by `find` (the port allows
//!   it, and checking would put the clock on the hot path), but `extend`, the revocations and `list`
//!   treat it as gone, as a backend with native expiry would: the purge's timing never changes an answer.
//!
//! The task holds only a [`Weak`] reference to the store's state and a shutdown receiver whose sender the
//! store owns, so dropping the store stops the task and frees the sessions.
//!
//! Nothing here logs a token, a digest or a secret: the only events are counts.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use metrics::Gauge;
use sidekey_application::{
    Clock, ENDED_SESSION_RETENTION, Grant, Lookup, RevocationTarget, SessionFilter, SessionStore, StoreError,
};
use sidekey_domain::{
    CallerSession, Limits, Metadata, Scope, SecretRef, SecretValue, Session, SessionId, SessionParts,
    Subject, TokenDigest, TokenKeys,
};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Longest the purge task sleeps before looking at the clock again. The task sleeps on tokio's monotonic
/// timer but due times are wall-clock times from the [`Clock`] port; one second bounds how late a purge
/// runs after the wall clock jumps forward (NTP step, VM resume), at the cost of one wake-up a second
/// while sessions are stored.
pub const MAX_PURGE_SLEEP: Duration = Duration::from_secs(1);

/// Capacity below which the map is not worth shrinking: a few hundred KiB at most, and shrinking it
/// would only make the next inserts grow it again.
const SHRINK_FLOOR: usize = 4096;

/// The name of the gauge counting active (stored, not revoked) sessions. Expired sessions count until
/// they are purged, which is what the memory actually holds.
pub const LIVE_SESSIONS_GAUGE: &str = "sidekey_sessions_live";

/// The map key: the session id's bytes, which are the token digest's but for the UUID's version and
/// variant bits (see the module docs for why that is enough).
type IdKey = [u8; 16];

fn key_of(digest: &TokenDigest) -> IdKey {
    id_key(SessionId::of_token(digest))
}

fn id_key(id: SessionId) -> IdKey {
    *id.as_uuid().as_bytes()
}

fn id_of(key: &IdKey) -> SessionId {
    SessionId::from_uuid(Uuid::from_bytes(*key))
}

/// Hashes an [`IdKey`] by folding its two words: all but 6 of its bits are uniformly random already,
/// and the fold lines each fixed bit up with a random one.
#[derive(Default)]
struct IdKeyHasher(u64);

impl Hasher for IdKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // An array hashes as its bytes in one `write` (no length prefix for fixed-size arrays). Fold
        // whatever comes, so the hasher stays correct for any input, and fast for the one it gets.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
}

type Sessions = DashMap<IdKey, Entry, BuildHasherDefault<IdKeyHasher>>;

/// Shared profiles by `secret_key_id` and subject.
type Profiles = HashMap<(SecretRef, Option<Subject>), Weak<Profile>>;

/// What sessions share: whom and what for, and the real key.
struct Profile {
    secret_ref: SecretRef,
    subject: Option<Subject>,
    secret: Arc<SecretValue>,
    /// What only some sessions have, boxed so that the many plain sessions that share a profile do not
    /// pay for it: such a session gets a profile of its own.
    terms: Option<Box<Terms>>,
}

/// A session's metadata, sign-in binding, scope and limits, when it has any.
struct Terms {
    metadata: Metadata,
    caller_session: Option<CallerSession>,
    scope: Scope,
    limits: Limits,
}

impl Terms {
    /// The session's terms, or `None` when it has none (it may then share a profile).
    fn of(session: &Session) -> Option<Box<Self>> {
        let plain = session.metadata().is_empty()
            && session.caller_session().is_none()
            && session.scope().is_unrestricted()
            && session.limits().is_unlimited();
        (!plain).then(|| {
            Box::new(Self {
                metadata: session.metadata().clone(),
                caller_session: session.caller_session().cloned(),
                scope: session.scope().clone(),
                limits: *session.limits(),
            })
        })
    }
}

/// One stored session but its id (the map key): 32 bytes. Times are nanoseconds since the Unix epoch
/// (exact for any time from 1970 to 2554).
struct Entry {
    issued_at: u64,
    expires_at: u64,
    /// An active session's TTL in nanoseconds; a tombstone's [`Ending`].
    ttl_or_ending: u64,
    /// `None` for a tombstone: the session ended and its real key is gone.
    profile: Option<Arc<Profile>>,
}

/// How a session ended, as a tombstone keeps it.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Ending {
    Revoked = 1,
    Expired = 2,
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

fn time(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Entry {
    fn is_active(&self) -> bool {
        self.profile.is_some()
    }

    /// When the purge must next act on this entry: end an active session at its expiry; forget a
    /// tombstone [`ENDED_SESSION_RETENTION`] after the session's expiry.
    fn due_at(&self) -> u64 {
        if self.is_active() {
            self.expires_at
        } else {
            self.expires_at.saturating_add(duration_nanos(ENDED_SESSION_RETENTION))
        }
    }

    /// The session stored under `key`, if this entry is active.
    fn session(&self, key: &IdKey) -> Option<Session> {
        let profile = self.profile.as_ref()?;
        let terms = profile.terms.as_deref();
        let parts = SessionParts {
            id: id_of(key),
            secret_ref: profile.secret_ref.clone(),
            subject: profile.subject.clone(),
            issued_at: time(self.issued_at),
            expires_at: time(self.expires_at),
            ttl: Duration::from_nanos(self.ttl_or_ending),
            metadata: terms.map(|terms| terms.metadata.clone()).unwrap_or_default(),
            caller_session: terms.and_then(|terms| terms.caller_session.clone()),
            scope: terms.map(|terms| terms.scope.clone()).unwrap_or_default(),
            limits: terms.map(|terms| terms.limits).unwrap_or_default(),
        };
        // Stored from a valid session with exact times, so it is valid again.
        Session::from_parts(parts).ok()
    }

    /// What `find` answers for this entry, stored under `key`.
    fn lookup(&self, key: &IdKey) -> Lookup {
        match &self.profile {
            Some(profile) => match self.session(key) {
                Some(session) => Lookup::Active(Grant { session, secret: Arc::clone(&profile.secret) }),
                None => Lookup::Missing,
            },
            None if self.ttl_or_ending == Ending::Revoked as u64 => Lookup::Revoked,
            None => Lookup::Expired,
        }
    }

    /// Whether the session is active and not expired at `now`: what the admin operations act on.
    fn is_live_at(&self, now: u64) -> bool {
        // Expired at the boundary, as `Session::is_expired_at`.
        self.is_active() && self.expires_at > now
    }

    /// Ends the session, returning its profile (to be dropped outside the shard lock).
    fn end(&mut self, ending: Ending) -> Option<Arc<Profile>> {
        self.ttl_or_ending = ending as u64;
        self.profile.take()
    }
}

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
    sessions: Sessions,
    /// No entry is due before this (nanoseconds since the epoch; `u64::MAX`: nothing stored). Writers
    /// lower it; a purge resets it and lowers it again to what it left. Never later than the truth, so
    /// the purge never misses an entry; at worst it scans once for nothing.
    earliest_due: AtomicU64,
    /// Profiles without metadata, by `secret_key_id` and subject, so that sessions of the same key and
    /// user share one. Weak: the sessions own their profile; a dead entry is cleared by the purge.
    profiles: Mutex<Profiles>,
    /// Wakes the purge task when an entry is due earlier than it planned to look.
    wake: Arc<Notify>,
    /// Where "now" comes from, for expiry and purging alike.
    clock: Arc<dyn Clock>,
    /// [`LIVE_SESSIONS_GAUGE`], resolved once so that the writers pay no registry lookup.
    live: Gauge,
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
            sessions: Sessions::default(),
            earliest_due: AtomicU64::new(u64::MAX),
            profiles: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            clock,
            live: metrics::gauge!(LIVE_SESSIONS_GAUGE),
        });
        let (shutdown, stopped) = oneshot::channel();
        let task = tokio::spawn(purge_task(Arc::downgrade(&shared), Arc::clone(&shared.wake), stopped));
        (Self { shared, _shutdown: shutdown }, task)
    }

    /// Ends every session whose expiry has passed at the clock's now and forgets every tombstone whose
    /// retention has, then releases the map's spare memory if it has emptied out. Returns how many
    /// entries it forgot.
    ///
    /// The purge task calls this on its own; it is public for tests and for callers that want memory
    /// back at a moment of their choosing.
    pub fn purge_expired(&self) -> usize {
        self.shared.purge(self.shared.clock.now())
    }

    /// Entries stored, tombstones included.
    pub fn len(&self) -> usize {
        self.shared.sessions.len()
    }

    /// Whether nothing is stored, not even a tombstone.
    pub fn is_empty(&self) -> bool {
        self.shared.sessions.is_empty()
    }

    /// How many entries the map can hold without growing: what its table occupies.
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
    /// Notes that an entry is due at `due`, waking the purge task if that is earlier than it knew.
    fn schedule(&self, due: u64) {
        if due < self.earliest_due.fetch_min(due, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// The profile for `grant`: an existing one with the same key, subject and real key when there is
    /// one (sessions with terms of their own, such as metadata or a scope, get their own).
    fn profile_for(&self, grant: Grant) -> Arc<Profile> {
        let Grant { session, secret } = grant;
        let terms = Terms::of(&session);
        let shareable = terms.is_none();
        let profile = |secret| Profile {
            secret_ref: session.secret_ref().clone(),
            subject: session.subject().cloned(),
            secret,
            terms,
        };
        if !shareable {
            return Arc::new(profile(secret));
        }
        let mut profiles = self.profiles.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = profiles.entry((session.secret_ref().clone(), session.subject().cloned())).or_default();
        if let Some(existing) = slot.upgrade()
            && (Arc::ptr_eq(&existing.secret, &secret)
                || bool::from(existing.secret.expose().as_bytes().ct_eq(secret.expose().as_bytes())))
        {
            return existing;
        }
        let fresh = Arc::new(profile(secret));
        *slot = Arc::downgrade(&fresh);
        fresh
    }

    /// One purge at `now`: ends the expired sessions, forgets the tombstones past their retention,
    /// and shrinks the map when it has emptied out. Returns how many entries it forgot.
    fn purge(&self, now: SystemTime) -> usize {
        let now = nanos(now);
        if self.earliest_due.load(Ordering::Acquire) > now {
            return 0;
        }
        // Reset first: a writer that schedules while the scan runs lowers it again, and is not lost.
        self.earliest_due.store(u64::MAX, Ordering::Release);
        let mut due = Vec::new();
        let mut remaining_earliest = u64::MAX;
        for entry in &self.sessions {
            let at = entry.due_at();
            if at <= now {
                due.push(*entry.key());
            } else {
                remaining_earliest = remaining_earliest.min(at);
            }
        }
        let (mut ended, mut forgotten) = (0u32, 0usize);
        let mut released = Vec::new();
        for key in due {
            if self.sessions.remove_if(&key, |_, entry| !entry.is_active() && entry.due_at() <= now).is_some()
            {
                forgotten += 1;
                continue;
            }
            let Some(mut entry) = self.sessions.get_mut(&key) else { continue };
            if entry.is_active() && entry.expires_at <= now {
                released.extend(entry.end(Ending::Expired));
                ended += 1;
            }
            // Whatever it is now (ended here, refreshed or revoked meanwhile), it is due again later.
            remaining_earliest = remaining_earliest.min(entry.due_at());
        }
        self.schedule(remaining_earliest);
        // Dropped after the shard locks are released: zeroing the last copy of a real key is work a
        // verification on the same shard need not wait for.
        drop(released);
        if ended > 0 {
            self.live.decrement(f64::from(ended));
            tracing::debug!(ended, "ended expired sessions");
        }
        if forgotten > 0 {
            let capacity = self.sessions.capacity();
            if capacity > SHRINK_FLOOR && self.sessions.len() < capacity / 4 {
                self.sessions.shrink_to_fit();
            }
            self.profiles
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|_, weak| weak.strong_count() > 0);
            tracing::debug!(forgotten, remaining = self.sessions.len(), "purged expired sessions");
        }
        forgotten
    }

    /// When the purge task should next look, from the clock's now.
    fn next_wake(&self) -> Duration {
        let earliest = self.earliest_due.load(Ordering::Acquire);
        let now = nanos(self.clock.now());
        Duration::from_nanos(earliest.saturating_sub(now)).min(MAX_PURGE_SLEEP)
    }

    /// Revokes the session under `key` if it is live at `now`; returns whether it did.
    fn revoke(&self, key: &IdKey, now: SystemTime) -> bool {
        let released = {
            let Some(mut entry) = self.sessions.get_mut(key) else { return false };
            if !entry.is_live_at(nanos(now)) {
                return false;
            }
            let released = entry.end(Ending::Revoked);
            self.schedule(entry.due_at());
            released
        };
        // Dropped after the shard lock is released (see `purge`).
        drop(released);
        self.live.decrement(1.0);
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The gauge is process-wide; sessions that vanish with the store must leave it too.
        let active = self.sessions.iter().filter(|entry| entry.is_active()).count();
        if active > 0 {
            self.live.decrement(active as f64);
        }
    }
}

/// The purge loop: purge what is due, then sleep until the next due time (capped), an earlier due
/// time's notification, or the store's drop.
async fn purge_task(shared: Weak<Shared>, wake: Arc<Notify>, mut stopped: oneshot::Receiver<()>) {
    loop {
        // The strong reference lives only while purging, never across the task's sleep: the store's
        // drop frees the sessions even while the task waits.
        let wait = {
            let Some(shared) = shared.upgrade() else { return };
            shared.purge(shared.clock.now());
            shared.next_wake()
        };
        tokio::select! {
            _ = &mut stopped => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[async_trait]
impl SessionStore for InMemorySessionStore {
    async fn insert(&self, keys: &TokenKeys, grant: Grant) -> Result<(), StoreError> {
        // The sealing key is for stores that keep data outside this process; memory needs no sealing.
        let key = key_of(keys.digest());
        let session = &grant.session;
        if id_of(&key) != session.id() {
            // The application issues every session under its token's id; anything else is a bug that
            // must not store a session `find` would answer with another id.
            return Err(StoreError::Unavailable("the session id is not derived from its token".into()));
        }
        let entry = Entry {
            issued_at: nanos(session.issued_at()),
            expires_at: nanos(session.expires_at()),
            ttl_or_ending: duration_nanos(session.ttl()),
            profile: None,
        };
        let due = entry.expires_at;
        // Before the shard lock: the profile table has its own.
        let profile = self.shared.profile_for(grant);
        match self.shared.sessions.entry(key) {
            // A tombstone counts: a revoked token must never come back under a new session.
            MapEntry::Occupied(_) => return Err(StoreError::Conflict),
            MapEntry::Vacant(vacant) => {
                vacant.insert(Entry { profile: Some(profile), ..entry });
            }
        }
        self.shared.schedule(due);
        self.shared.live.increment(1.0);
        Ok(())
    }

    async fn find(&self, keys: &TokenKeys) -> Result<Lookup, StoreError> {
        // One shard read lock and a few reference counts: nothing else on the verification path.
        let key = key_of(keys.digest());
        Ok(self.shared.sessions.get(&key).map_or(Lookup::Missing, |entry| entry.lookup(&key)))
    }

    async fn extend(&self, keys: &TokenKeys, expires_at: SystemTime) -> Result<Lookup, StoreError> {
        let now = nanos(self.shared.clock.now());
        let key = key_of(keys.digest());
        let Some(mut entry) = self.shared.sessions.get_mut(&key) else {
            return Ok(Lookup::Missing);
        };
        if !entry.is_active() {
            return Ok(entry.lookup(&key));
        }
        // Expired but not yet seen by the purge is expired as far as callers can tell: refreshing it
        // would resurrect it just because the purge task had not come round yet.
        if entry.expires_at <= now {
            return Ok(Lookup::Expired);
        }
        let moved = nanos(expires_at);
        // The domain refuses an expiry before issue; such a request leaves the session as it is.
        if moved != entry.expires_at && moved >= entry.issued_at {
            entry.expires_at = moved;
            self.shared.schedule(moved);
        }
        Ok(entry.lookup(&key))
    }

    async fn revoke(&self, digest: &TokenDigest) -> Result<bool, StoreError> {
        Ok(self.shared.revoke(&key_of(digest), self.shared.clock.now()))
    }

    async fn revoke_by_id(&self, id: SessionId) -> Result<bool, StoreError> {
        // The id is the key (see the module docs).
        Ok(self.shared.revoke(&id_key(id), self.shared.clock.now()))
    }

    async fn revoke_matching(&self, target: &RevocationTarget) -> Result<u64, StoreError> {
        // A scan, shard by shard under read locks (rare admin operation; see the module docs). The keys
        // are collected first because revoking needs a write lock on a shard the iterator would still
        // hold; each revocation re-checks its entry, so the count is exactly the sessions this call
        // revoked, even if others revoke or refresh concurrently.
        let now = self.shared.clock.now();
        let selected: Vec<IdKey> = self
            .shared
            .sessions
            .iter()
            .filter(|entry| {
                entry.is_live_at(nanos(now))
                    && entry.session(entry.key()).is_some_and(|session| target.matches(&session))
            })
            .map(|entry| *entry.key())
            .collect();
        let revoked = selected.iter().filter(|key| self.shared.revoke(key, now)).count();
        Ok(revoked as u64)
    }

    async fn list(&self, filter: &SessionFilter, limit: usize) -> Result<Vec<Session>, StoreError> {
        // A scan, shard by shard under read locks (rare admin operation; see the module docs).
        let now = nanos(self.shared.clock.now());
        Ok(self
            .shared
            .sessions
            .iter()
            .filter(|entry| entry.is_live_at(now))
            .filter_map(|entry| entry.session(entry.key()))
            .filter(|session| filter.matches(session))
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
