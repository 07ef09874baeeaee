//! The Lua scripts: every write is one of them, so it is atomic, and each touches only keys it is given
//! (`KEYS`), all of one shard's hash tag, so it runs unchanged on Redis Cluster.
//!
//! Conventions shared by the scripts:
//! - instants in the session hash and in "now"/"cutoff" arguments are 20-digit decimal nanoseconds,
//!   compared as strings (exact; see [`super::keys::instant_text`]); `cutoff` is now minus the ended-session
//!   retention, so a session with `expires_at <= cutoff` is forgotten;
//! - sorted-set scores and `PEXPIREAT` deadlines are milliseconds (Redis's own clock works in them);
//! - "now" always comes from the caller (the `Clock` port), never from Redis's `TIME`, so that every
//!   instance and every test decides expiry by the same clock.
//!
//! - every script that changes what a `find` answers for a session that was active (extend, revoke)
//!   `PUBLISH`es the digests it changed on the invalidation channel it is given (empty: publish nothing,
//!   as on Redis Cluster), from inside the script, so the message is atomic with the write: no instance
//!   can read the new state from Redis and miss the message, or get the message before the state. The
//!   local caches of every instance drop those digests on receipt (see `super::cache`). An insert
//!   publishes nothing: caches hold only sessions they read as active, never a digest's absence.
//!
//! Only standard commands of Redis 6.2+ are used (`SET … PXAT` is the newest).

use redis::{Script, ScriptInvocation};
use sidekey_application::ENDED_SESSION_RETENTION;

use super::keys::{duration_nanos, millis_ceil};
use super::record::{FIELDS, Now};

/// Functions every writing script starts with.
const PRELUDE: &str = r"
-- An index expires with its latest member plus the retention: it never outlives what it indexes.
-- (Computed from the highest score rather than `PEXPIREAT … GT`, so it also shrinks when that member
-- goes, and works on Redis 6.2.)
local function expire_index(key, retention_ms)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIREAT', key, string.format('%.0f', tonumber(top[2]) + tonumber(retention_ms)))
  end
end

-- Drops the members that ended (score at or before now) and resets the index's expiry.
local function prune_index(key, now_ms, retention_ms)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  expire_index(key, retention_ms)
end

local function index_add(key, score_ms, member, now_ms, retention_ms)
  redis.call('ZADD', key, score_ms, member)
  prune_index(key, now_ms, retention_ms)
end
";

/// Stores a new session, unless one is still remembered under its digest.
///
/// KEYS: [`WriteKeys`]. ARGV ([`Insert`]): 1 now, 2 cutoff, 3 now ms, 4 retention ms, 5 member (digest
/// hex), 6 sealed real key, 7 expires_at ms, 8 `1` when KEYS[6] is the id entry, 9 `1` when the session
/// has a subject, then the session hash's fields as name/value pairs (see `record`).
/// Returns 1 when stored, 0 when a session is still remembered under the digest (a conflict).
const INSERT: &str = r"
local previous = redis.call('HGET', KEYS[1], 'expires_at')
if previous and previous > ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
local keep = string.format('%.0f', tonumber(ARGV[7]) + tonumber(ARGV[4]))
redis.call('PEXPIREAT', KEYS[1], keep)
redis.call('SET', KEYS[2], ARGV[6], 'PXAT', ARGV[7])
if ARGV[8] == '1' then
  redis.call('SET', KEYS[6], ARGV[5], 'PXAT', keep)
end
index_add(KEYS[3], ARGV[7], ARGV[5], ARGV[3], ARGV[4])
index_add(KEYS[4], ARGV[7], ARGV[5], ARGV[3], ARGV[4])
if ARGV[9] == '1' then
  index_add(KEYS[5], ARGV[7], ARGV[5], ARGV[3], ARGV[4])
end
return 1
";

/// Reads a session: its hash fields (ARGV, in `record::FIELDS` order) and its sealed real key,
/// atomically.
///
/// KEYS: 1 session hash, 2 sealed key. Returns the fields then the sealed value (nil where absent).
const FIND: &str = r"
local found = redis.call('HMGET', KEYS[1], unpack(ARGV))
found[#ARGV + 1] = redis.call('GET', KEYS[2])
return found
";

/// Moves an active session's expiry.
///
/// KEYS: [`WriteKeys`]. ARGV ([`Extend`]): 1 now, 2 cutoff, 3 now ms, 4 retention ms, 5 member, 6 expected id,
/// 7 expected secret_key_id, 8 expected subject (empty: none), 9 new expires_at, 10 new expires_at ms,
/// 11 `1` when KEYS[6] is the id entry, 12 invalidation channel (empty: none).
/// Publishes the member on the channel when it moved the expiry.
/// Returns `{'active', expires_at}`, `{'revoked'}`, `{'expired'}`, `{'missing'}`, or `{'changed'}` when the
/// hash no longer holds the session the caller read (it then reads again).
const EXTEND: &str = r"
local f = redis.call('HMGET', KEYS[1], 'id', 'secret_key_id', 'subject', 'issued_at', 'expires_at', 'state')
if not f[5] or f[5] <= ARGV[2] then
  return {'missing'}
end
if f[1] ~= ARGV[6] or f[2] ~= ARGV[7] or (f[3] or '') ~= ARGV[8] then
  return {'changed'}
end
if f[6] ~= 'active' then
  return {'revoked'}
end
if f[5] <= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 0 then
  return {'expired'}
end
-- Unchanged, or an expiry before issue (which no session may have): leave it as it is.
if ARGV[9] == f[5] or ARGV[9] < f[4] then
  return {'active', f[5]}
end
redis.call('HSET', KEYS[1], 'expires_at', ARGV[9])
local keep = string.format('%.0f', tonumber(ARGV[10]) + tonumber(ARGV[4]))
redis.call('PEXPIREAT', KEYS[1], keep)
redis.call('PEXPIREAT', KEYS[2], ARGV[10])
if ARGV[11] == '1' then
  redis.call('PEXPIREAT', KEYS[6], keep)
end
index_add(KEYS[3], ARGV[10], ARGV[5], ARGV[3], ARGV[4])
index_add(KEYS[4], ARGV[10], ARGV[5], ARGV[3], ARGV[4])
if ARGV[8] ~= '' then
  index_add(KEYS[5], ARGV[10], ARGV[5], ARGV[3], ARGV[4])
end
if ARGV[12] ~= '' then
  redis.call('PUBLISH', ARGV[12], ARGV[5])
end
return {'active', ARGV[9]}
";

/// Revokes sessions of one shard: one for a logout, a page of them for a bulk revocation.
///
/// KEYS ([`Revoke`]): 1 `all` index, then 4 per session: session hash, sealed key, `ref` index, `sub`
/// index (or the `all` index again when there is no subject).
/// ARGV: 1 now, 2 now ms, 3 retention ms, 4 invalidation channel (empty: none), then 4 per session:
/// member, expected id, expected secret_key_id, expected subject (empty: none).
/// Returns how many active sessions it revoked. A session that is not active (revoked, expired, gone)
/// or no longer the one the caller read is left as it is and not counted. Publishes the members it
/// revoked, space-separated, in one message (at most a page: 256 × 65 bytes).
const REVOKE: &str = r"
local revoked = 0
local touched = {}
local members = {}
for i = 0, (#KEYS - 1) / 4 - 1 do
  local hash, sealed, by_ref, by_sub = KEYS[2 + 4 * i], KEYS[3 + 4 * i], KEYS[4 + 4 * i], KEYS[5 + 4 * i]
  local member, id, ref, sub = ARGV[5 + 4 * i], ARGV[6 + 4 * i], ARGV[7 + 4 * i], ARGV[8 + 4 * i]
  local f = redis.call('HMGET', hash, 'id', 'secret_key_id', 'subject', 'expires_at', 'state')
  if f[1] == id and f[2] == ref and (f[3] or '') == sub and f[5] == 'active' and f[4]
      and f[4] > ARGV[1] and redis.call('EXISTS', sealed) == 1 then
    -- The hash stays, as the tombstone that says 'revoked' until its expiry plus the retention; the
    -- real key goes now, and so does every index entry (indexes list active sessions only).
    redis.call('HSET', hash, 'state', 'revoked')
    redis.call('DEL', sealed)
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREM', by_ref, member)
    touched[by_ref] = true
    if sub ~= '' then
      redis.call('ZREM', by_sub, member)
      touched[by_sub] = true
    end
    revoked = revoked + 1
    members[revoked] = member
  end
end
prune_index(KEYS[1], ARGV[2], ARGV[3])
for key in pairs(touched) do
  expire_index(key, ARGV[3])
end
if revoked > 0 and ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], table.concat(members, ' '))
end
return revoked
";

/// The keys every write of one session touches, in the `KEYS` order of [`INSERT`] and [`EXTEND`].
pub(crate) struct WriteKeys {
    pub(crate) session: String,
    pub(crate) sealed: String,
    pub(crate) all: String,
    pub(crate) by_secret_ref: String,
    /// The `sub` index, or the `all` index again when the session has no subject.
    pub(crate) by_subject: String,
    /// The id entry, or the session hash again when the id lives in another shard.
    pub(crate) id_entry: String,
    /// Whether `id_entry` is the id entry.
    pub(crate) id_here: bool,
}

impl WriteKeys {
    fn add_to(&self, invocation: &mut ScriptInvocation<'_>) {
        for key in
            [&self.session, &self.sealed, &self.all, &self.by_secret_ref, &self.by_subject, &self.id_entry]
        {
            invocation.key(key);
        }
    }

    fn id_flag(&self) -> &'static str {
        if self.id_here { "1" } else { "0" }
    }
}

/// The arguments of [`INSERT`].
pub(crate) struct Insert<'a> {
    pub(crate) keys: &'a WriteKeys,
    pub(crate) now: &'a Now,
    pub(crate) member: &'a str,
    pub(crate) sealed: &'a [u8],
    pub(crate) expires_ms: u64,
    pub(crate) has_subject: bool,
    /// The session hash's fields, as name/value pairs.
    pub(crate) fields: &'a [(&'static str, String)],
}

/// What a session must still be for a write to apply: the caller read it, then wrote by script, and the
/// script refuses if the hash meanwhile holds another session under the same digest.
pub(crate) struct Expected<'a> {
    pub(crate) id: &'a str,
    pub(crate) secret_key_id: &'a str,
    /// Empty: none.
    pub(crate) subject: &'a str,
}

/// The arguments of [`EXTEND`].
pub(crate) struct Extend<'a> {
    pub(crate) keys: &'a WriteKeys,
    pub(crate) now: &'a Now,
    pub(crate) member: &'a str,
    pub(crate) expected: Expected<'a>,
    /// The new `expires_at` as 20-digit text, and in milliseconds.
    pub(crate) expires_at: &'a str,
    pub(crate) expires_ms: u64,
    /// Empty: publish nothing.
    pub(crate) invalidations: &'a str,
}

/// One session of a [`Revoke`].
pub(crate) struct RevokeEntry<'a> {
    pub(crate) session: String,
    pub(crate) sealed: String,
    pub(crate) by_secret_ref: String,
    /// The `sub` index, or the `all` index again when the session has no subject.
    pub(crate) by_subject: String,
    pub(crate) member: String,
    pub(crate) expected: Expected<'a>,
}

/// The arguments of [`REVOKE`]: sessions of one shard.
pub(crate) struct Revoke<'a> {
    pub(crate) all: &'a str,
    pub(crate) now: &'a Now,
    pub(crate) invalidations: &'a str,
    pub(crate) entries: Vec<RevokeEntry<'a>>,
}

/// The scripts, hashed once (their SHA-1 is what `EVALSHA` sends; the text goes only after a `NOSCRIPT`).
pub(crate) struct Scripts {
    insert: Script,
    find: Script,
    extend: Script,
    revoke: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            insert: Script::new(&format!("{PRELUDE}{INSERT}")),
            find: Script::new(FIND),
            extend: Script::new(&format!("{PRELUDE}{EXTEND}")),
            revoke: Script::new(&format!("{PRELUDE}{REVOKE}")),
        }
    }

    pub(crate) fn insert(&self, args: &Insert<'_>) -> ScriptInvocation<'_> {
        let mut invocation = write(&self.insert, args.keys, args.now, args.member);
        invocation.arg(args.sealed).arg(args.expires_ms).arg(args.keys.id_flag()).arg(if args.has_subject {
            "1"
        } else {
            "0"
        });
        for (name, value) in args.fields {
            invocation.arg(*name).arg(value);
        }
        invocation
    }

    /// Reads the session hash `session` (its [`FIELDS`]) and the sealed key `sealed`.
    pub(crate) fn find(&self, session: &str, sealed: &str) -> ScriptInvocation<'_> {
        let mut invocation = self.find.prepare_invoke();
        invocation.key(session).key(sealed).arg(&FIELDS[..]);
        invocation
    }

    pub(crate) fn extend(&self, args: &Extend<'_>) -> ScriptInvocation<'_> {
        let mut invocation = write(&self.extend, args.keys, args.now, args.member);
        invocation
            .arg(args.expected.id)
            .arg(args.expected.secret_key_id)
            .arg(args.expected.subject)
            .arg(args.expires_at)
            .arg(args.expires_ms)
            .arg(args.keys.id_flag())
            .arg(args.invalidations);
        invocation
    }

    pub(crate) fn revoke(&self, args: &Revoke<'_>) -> ScriptInvocation<'_> {
        let mut invocation = self.revoke.prepare_invoke();
        invocation
            .key(args.all)
            .arg(&args.now.text)
            .arg(args.now.millis)
            .arg(retention_millis())
            .arg(args.invalidations);
        for entry in &args.entries {
            invocation
                .key(&entry.session)
                .key(&entry.sealed)
                .key(&entry.by_secret_ref)
                .key(&entry.by_subject)
                .arg(&entry.member)
                .arg(entry.expected.id)
                .arg(entry.expected.secret_key_id)
                .arg(entry.expected.subject);
        }
        invocation
    }
}

/// The start every write of one session shares: its [`WriteKeys`], then ARGV 1 now, 2 cutoff, 3 now ms,
/// 4 retention ms, 5 member.
fn write<'s>(script: &'s Script, keys: &WriteKeys, now: &Now, member: &str) -> ScriptInvocation<'s> {
    let mut invocation = script.prepare_invoke();
    keys.add_to(&mut invocation);
    invocation.arg(&now.text).arg(&now.cutoff).arg(now.millis).arg(retention_millis()).arg(member);
    invocation
}

/// The retention in milliseconds, as the scripts' expiries add it.
pub(crate) fn retention_millis() -> u64 {
    millis_ceil(duration_nanos(ENDED_SESSION_RETENTION))
}
