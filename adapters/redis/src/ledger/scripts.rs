//! The ledger's Lua scripts. Each runs over the keys of one account (one hash tag, given as `KEYS`), so it
//! is atomic and runs unchanged on Redis Cluster; an admission runs [`ADMIT`] once per account and, when a
//! later account refuses, [`RELEASE`] on the accounts already counted (see the module documentation of
//! `ledger` for why and what that guarantees).
//!
//! Conventions:
//! - "now" always comes from the caller (the `Clock` port), never from Redis's `TIME`;
//! - instants that must be exact (a GCRA arrival time) are 20-digit decimal nanoseconds, as the session
//!   store writes them ([`instant_text`]); Lua's numbers are doubles, exact only to 2^53, so the scripts
//!   split such an instant at the second and only ever compute differences of nearby instants;
//! - sorted-set scores and the `keep` field are milliseconds by the service's clock; a reservation's lapse
//!   is rounded up and "now" down, so a reservation never stops counting early;
//! - Redis expiries are set relative (`PEXPIRE`/`PX`: the deadline by the service's clock minus its now),
//!   so an offset between Redis's clock and the service's changes nothing; every script that writes a key
//!   sets its expiry, and a key whose deadline has passed is deleted by that very `PEXPIRE`;
//! - counts are integers below 2^53 (the callers clamp, [`MAX_COUNT`]), which Lua holds exactly; numbers
//!   go back to Redis through `string.format('%.0f')`, never Lua's default 14-digit formatting.
//!
//! Only standard commands of Redis 6.2+ are used, as by the session store.

use redis::{Script, ScriptInvocation};

use super::keys::CounterKeys;
use crate::store::keys::instant_text;

/// The largest count the scripts take (2^53 - 1, the largest integer a Lua number holds exactly): token
/// figures above it are clamped, far beyond any budget.
pub(crate) const MAX_COUNT: u64 = (1 << 53) - 1;

/// Functions every ledger script starts with.
const PRELUDE: &str = r"
local MAX_COUNT = 9007199254740991

local function int(x)
  return string.format('%.0f', x)
end

-- An instant (20-digit nanoseconds) as its seconds and its nanoseconds: both exact as Lua numbers.
local function split(instant)
  return tonumber(string.sub(instant, 1, 11)), tonumber(string.sub(instant, 12, 20))
end

-- a - b in nanoseconds: exact while a and b are within about a hundred days of each other, and of the
-- right sign whatever the distance. Only the first 20 characters count (a rate value has more).
local function minus(a, b)
  local a_s, a_n = split(a)
  local b_s, b_n = split(b)
  return (a_s - b_s) * 1e9 + (a_n - b_n)
end

-- instant + ns (ns >= 0), as 20-digit text.
local function plus(instant, ns)
  local s, n = split(instant)
  n = n + ns
  local carry = math.floor(n / 1e9)
  return string.format('%011.0f%09.0f', s + carry, n - carry * 1e9)
end

-- Adds `by` (possibly negative) to a counter field, kept within 0 .. MAX_COUNT.
local function add(key, field, by)
  local value = (tonumber(redis.call('HGET', key, field)) or 0) + by
  redis.call('HSET', key, field, int(math.max(0, math.min(value, MAX_COUNT))))
end

-- The counters of an account: four KEYS each, after `skip` others.
local function counters(skip)
  local list = {}
  for i = 0, (#KEYS - skip) / 4 - 1 do
    local at = skip + 4 * i
    list[i + 1] = {totals = KEYS[at + 1], held = KEYS[at + 2], amounts = KEYS[at + 3], settled = KEYS[at + 4]}
  end
  return list
end

-- Lapsed reservations stop counting: their tokens leave `reserved`. They need no tombstone: a late
-- settle of one counts its usage as the settle of a live one does, and leaves the tombstone then.
-- Tombstones past their time are forgotten.
local function prune(c, now_ms)
  if redis.call('EXISTS', c.totals) == 0 then
    return
  end
  local lapsed = redis.call('ZRANGEBYSCORE', c.held, '-inf', now_ms)
  for _, id in ipairs(lapsed) do
    local amount = redis.call('HGET', c.amounts, id)
    if amount then
      add(c.totals, 'reserved', -tonumber(amount))
      redis.call('HDEL', c.amounts, id)
    end
  end
  if #lapsed > 0 then
    redis.call('ZREMRANGEBYSCORE', c.held, '-inf', now_ms)
  end
  redis.call('ZREMRANGEBYSCORE', c.settled, '-inf', now_ms)
end

-- Drops a live reservation, returning its tokens to the budget; false when it is not live.
local function unhold(c, id)
  local amount = redis.call('HGET', c.amounts, id)
  if not amount then
    return false
  end
  redis.call('HDEL', c.amounts, id)
  redis.call('ZREM', c.held, id)
  add(c.totals, 'reserved', -tonumber(amount))
  return true
end

-- Moves the counter's `keep` to `keep_ms` if that is later, and expires its four keys then.
local function keep(c, keep_ms, now_ms)
  local kept = math.max(tonumber(redis.call('HGET', c.totals, 'keep')) or 0, keep_ms)
  redis.call('HSET', c.totals, 'keep', int(kept))
  local ttl = int(kept - now_ms)
  redis.call('PEXPIRE', c.totals, ttl)
  redis.call('PEXPIRE', c.held, ttl)
  redis.call('PEXPIRE', c.amounts, ttl)
  redis.call('PEXPIRE', c.settled, ttl)
end
";

/// Checks one account's limits and, only if all pass, counts the request in each of its counters,
/// reserves its tokens there and moves its GCRA arrival time.
///
/// KEYS ([`AccountKeys`]): 1 the rate key (the first counter's totals again when the account has no
/// rate), then 4 per counter: totals, held, amounts, settled.
/// ARGV ([`Admit`]): 1 now (20-digit ns), 2 now ms, 3 reservation id, 4 tokens to reserve, 5 when the
/// reservation lapses (ms), 6 rate interval ns (0: no rate), 7 rate tolerance ns, 8 max requests of the
/// first counter (empty: none), then 2 per counter: token budget (empty: none), keep (ms).
///
/// Checks, in order: the rate, the first counter's requests, each counter's tokens (settled plus live
/// reservations plus this one). Returns the first that refuses: `{'rate', ns until one more fits}`,
/// `{'requests'}`, `{'tokens', counter index from 1}`; or, when all pass, `{'admitted', the first
/// counter's requests now, the rate value before (empty: none), the rate value now (empty: no rate),
/// then per counter its tokens committed now}`. A rate value is the 20-digit arrival time, `:`, the
/// reservation id that set it, so that a release can tell whether anyone moved it since.
const ADMIT: &str = r"
local now, now_ms = ARGV[1], tonumber(ARGV[2])
local id, reserve = ARGV[3], tonumber(ARGV[4])
local interval, tolerance = tonumber(ARGV[6]), tonumber(ARGV[7])
local list = counters(1)
for _, c in ipairs(list) do
  prune(c, now_ms)
end

local before, after, ahead = '', '', 0
if interval > 0 then
  before = redis.call('GET', KEYS[1]) or ''
  local late = 0
  if before ~= '' then
    late = math.max(0, minus(before, now))
  end
  ahead = late + interval
  if ahead > tolerance then
    return {'rate', int(ahead - tolerance)}
  end
  after = plus(now, ahead) .. ':' .. id
end

local first = list[1]
if ARGV[8] ~= '' then
  local requests = tonumber(redis.call('HGET', first.totals, 'requests')) or 0
  if requests >= tonumber(ARGV[8]) then
    return {'requests'}
  end
end

local committed = {}
for i, c in ipairs(list) do
  local f = redis.call('HMGET', c.totals, 'input', 'output', 'reserved')
  committed[i] = (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0) + (tonumber(f[3]) or 0) + reserve
  local budget = ARGV[7 + 2 * i]
  if budget ~= '' and committed[i] > tonumber(budget) then
    return {'tokens', i}
  end
end

if after ~= '' then
  redis.call('SET', KEYS[1], after, 'PX', int(math.ceil(ahead / 1e6)))
end
for i, c in ipairs(list) do
  redis.call('HINCRBY', c.totals, 'requests', 1)
  if reserve > 0 then
    redis.call('ZADD', c.held, ARGV[5], id)
    redis.call('HSET', c.amounts, id, ARGV[4])
    add(c.totals, 'reserved', reserve)
  end
  keep(c, tonumber(ARGV[8 + 2 * i]), now_ms)
  committed[i] = int(committed[i])
end
local answer = {'admitted', redis.call('HGET', first.totals, 'requests'), before, after}
for _, value in ipairs(committed) do
  answer[#answer + 1] = value
end
return answer
";

/// Undoes what [`ADMIT`] did on one account, for an admission a later account refused: un-counts the
/// request, drops the reservation, and restores the GCRA arrival time to what it was before, only if it
/// is still the one this admission set (otherwise another request has moved it since and is counted
/// from it; leaving it costs at most this admission's slot of the rate, never grants an extra one).
///
/// KEYS: as [`ADMIT`]. ARGV ([`Release`]): 1 now (20-digit ns), 2 now ms, 3 reservation id, 4 the rate
/// value the admission set (empty: none), 5 the rate value before it (empty: none).
/// Returns 1.
const RELEASE: &str = r"
local now, now_ms, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
for _, c in ipairs(counters(1)) do
  if redis.call('EXISTS', c.totals) == 1 then
    if (tonumber(redis.call('HGET', c.totals, 'requests')) or 0) > 0 then
      redis.call('HINCRBY', c.totals, 'requests', -1)
    end
    unhold(c, id)
  end
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[1]) == ARGV[4] then
  local left = 0
  if ARGV[5] ~= '' then
    left = minus(ARGV[5], now)
  end
  if left > 0 then
    redis.call('SET', KEYS[1], ARGV[5], 'PX', int(math.ceil(left / 1e6)))
  else
    redis.call('DEL', KEYS[1])
  end
end
return 1
";

/// Replaces a reservation with the tokens the answer used, in each counter of one account that still
/// exists, once: a settled reservation leaves a tombstone, and a second settle finds it and counts
/// nothing. A reservation that lapsed is settled all the same (its tokens stopped counting as reserved
/// when it lapsed; now they count as used).
///
/// KEYS: 4 per counter (totals, held, amounts, settled). ARGV ([`Settle`]): 1 now ms, 2 reservation id,
/// 3 input tokens, 4 output tokens, 5 when the tombstone may be forgotten (ms).
/// Returns how many counters counted the usage.
const SETTLE: &str = r"
local now_ms, id = tonumber(ARGV[1]), ARGV[2]
local counted = 0
for _, c in ipairs(counters(0)) do
  prune(c, now_ms)
  if redis.call('EXISTS', c.totals) == 1 and not redis.call('ZSCORE', c.settled, id) then
    unhold(c, id)
    add(c.totals, 'input', tonumber(ARGV[3]))
    add(c.totals, 'output', tonumber(ARGV[4]))
    redis.call('ZADD', c.settled, ARGV[5], id)
    keep(c, 0, now_ms)
    counted = counted + 1
  end
end
return counted
";

/// Reads a session's counter without changing it: requests, input, output, and the tokens of the
/// reservations still live at now (those lapsed but not yet pruned deducted).
///
/// KEYS: totals, held, amounts. ARGV: 1 now ms. Returns four decimal strings.
const SESSION_USAGE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'requests', 'input', 'output', 'reserved')
local reserved = tonumber(f[4]) or 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  reserved = reserved - (tonumber(redis.call('HGET', KEYS[3], id)) or 0)
end
return {f[1] or '0', f[2] or '0', f[3] or '0', string.format('%.0f', math.max(0, reserved))}
";

/// Reads the totals of two counters of one account (a day and a month) at once.
///
/// KEYS: the two totals hashes. Returns six decimal strings: requests, input, output of each.
const WINDOW_TOTALS: &str = r"
local answer = {}
for _, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'requests', 'input', 'output')
  for j = 1, 3 do
    answer[#answer + 1] = f[j] or '0'
  end
end
return answer
";

/// One account's keys, in the `KEYS` order of [`ADMIT`] and [`RELEASE`].
#[derive(Debug, Clone)]
pub(crate) struct AccountKeys {
    /// The GCRA state, when the account has a rate (the session's or the subject's).
    pub(crate) rate: Option<String>,
    /// Its counters (one for a session; a day and a month for a subject or a key). Never empty.
    pub(crate) counters: Vec<CounterKeys>,
}

impl AccountKeys {
    fn add_to(&self, invocation: &mut ScriptInvocation<'_>) {
        // Without a rate, a key of the same account stands in: on Redis Cluster every key a script
        // names must be of one slot, and the script ignores it.
        invocation.key(self.rate.as_deref().unwrap_or(&self.counters[0].totals));
        for counter in &self.counters {
            for key in counter.all() {
                invocation.key(key);
            }
        }
    }
}

/// "Now", in the forms the scripts take.
#[derive(Debug, Clone)]
pub(crate) struct Now {
    /// 20-digit nanoseconds since the epoch.
    pub(crate) text: String,
    /// Milliseconds since the epoch, rounded down.
    pub(crate) millis: u64,
}

impl Now {
    /// `nanos` nanoseconds since the epoch.
    pub(crate) fn at(nanos: u64) -> Self {
        Self { text: instant_text(nanos), millis: nanos / 1_000_000 }
    }
}

/// A GCRA rate, as [`ADMIT`] takes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Nanoseconds between two requests at the steady rate.
    pub(crate) interval_ns: u64,
    /// How far ahead of now the arrival time may run: the whole minute's burst.
    pub(crate) tolerance_ns: u64,
}

/// A counter's limits and lifetime, as [`ADMIT`] takes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterTerms {
    /// Its token budget, if any.
    pub(crate) budget: Option<u64>,
    /// When it may be forgotten (ms by the service's clock).
    pub(crate) keep_ms: u64,
}

/// The arguments of [`ADMIT`].
pub(crate) struct Admit<'a> {
    pub(crate) account: &'a AccountKeys,
    pub(crate) now: &'a Now,
    /// The reservation id (32 hex digits).
    pub(crate) id: &'a str,
    /// Tokens to reserve (at most [`MAX_COUNT`]).
    pub(crate) reserve: u64,
    /// When the reservation lapses (ms, rounded up).
    pub(crate) lapse_ms: u64,
    pub(crate) rate: Option<Rate>,
    /// The first counter's request budget.
    pub(crate) max_requests: Option<u64>,
    /// One per counter of `account`, in its order.
    pub(crate) terms: &'a [CounterTerms],
}

/// The arguments of [`RELEASE`].
pub(crate) struct Release<'a> {
    pub(crate) account: &'a AccountKeys,
    pub(crate) now: &'a Now,
    pub(crate) id: &'a str,
    /// The rate value the admission set, and the one before it (empty: none).
    pub(crate) rate_set: &'a str,
    pub(crate) rate_before: &'a str,
}

/// The arguments of [`SETTLE`].
pub(crate) struct Settle<'a> {
    pub(crate) counters: &'a [CounterKeys],
    pub(crate) now: &'a Now,
    pub(crate) id: &'a str,
    /// At most [`MAX_COUNT`] each.
    pub(crate) input: u64,
    pub(crate) output: u64,
    /// When the tombstone may be forgotten (ms).
    pub(crate) forget_ms: u64,
}

/// The scripts, hashed once (`EVALSHA` sends the hash; the text goes only after a `NOSCRIPT`).
pub(crate) struct LedgerScripts {
    admit: Script,
    release: Script,
    settle: Script,
    session_usage: Script,
    window_totals: Script,
}

impl LedgerScripts {
    pub(crate) fn new() -> Self {
        Self {
            admit: Script::new(&format!("{PRELUDE}{ADMIT}")),
            release: Script::new(&format!("{PRELUDE}{RELEASE}")),
            settle: Script::new(&format!("{PRELUDE}{SETTLE}")),
            session_usage: Script::new(SESSION_USAGE),
            window_totals: Script::new(WINDOW_TOTALS),
        }
    }

    pub(crate) fn admit(&self, args: &Admit<'_>) -> ScriptInvocation<'_> {
        debug_assert_eq!(args.terms.len(), args.account.counters.len());
        let mut invocation = self.admit.prepare_invoke();
        args.account.add_to(&mut invocation);
        let (interval, tolerance) = args.rate.map_or((0, 0), |rate| (rate.interval_ns, rate.tolerance_ns));
        invocation
            .arg(&args.now.text)
            .arg(args.now.millis)
            .arg(args.id)
            .arg(args.reserve.min(MAX_COUNT))
            .arg(args.lapse_ms)
            .arg(interval)
            .arg(tolerance)
            .arg(optional(args.max_requests));
        for terms in args.terms {
            invocation.arg(optional(terms.budget)).arg(terms.keep_ms);
        }
        invocation
    }

    pub(crate) fn release(&self, args: &Release<'_>) -> ScriptInvocation<'_> {
        let mut invocation = self.release.prepare_invoke();
        args.account.add_to(&mut invocation);
        invocation
            .arg(&args.now.text)
            .arg(args.now.millis)
            .arg(args.id)
            .arg(args.rate_set)
            .arg(args.rate_before);
        invocation
    }

    pub(crate) fn settle(&self, args: &Settle<'_>) -> ScriptInvocation<'_> {
        let mut invocation = self.settle.prepare_invoke();
        for counter in args.counters {
            for key in counter.all() {
                invocation.key(key);
            }
        }
        invocation
            .arg(args.now.millis)
            .arg(args.id)
            .arg(args.input.min(MAX_COUNT))
            .arg(args.output.min(MAX_COUNT))
            .arg(args.forget_ms);
        invocation
    }

    /// Reads the session counter `counter` at `now`.
    pub(crate) fn session_usage(&self, counter: &CounterKeys, now: &Now) -> ScriptInvocation<'_> {
        let mut invocation = self.session_usage.prepare_invoke();
        invocation.key(&counter.totals).key(&counter.held).key(&counter.amounts).arg(now.millis);
        invocation
    }

    /// Reads the totals of `day` and `month` (of one account).
    pub(crate) fn window_totals(&self, day: &CounterKeys, month: &CounterKeys) -> ScriptInvocation<'_> {
        let mut invocation = self.window_totals.prepare_invoke();
        invocation.key(&day.totals).key(&month.totals);
        invocation
    }
}

/// A limit as the scripts take it: its decimal value, or empty for none.
fn optional(limit: Option<u64>) -> String {
    limit.map(|limit| limit.to_string()).unwrap_or_default()
}
