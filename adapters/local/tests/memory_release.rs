//! The in-memory store gives expired sessions' memory back, and its purge task does so by itself.
//!
//! Run the big test at full size and speed with
//! `cargo test --release -p sidekey-adapters --test memory_release -- --nocapture`
//! (`--nocapture` shows the capacity and RSS figures it prints).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use sidekey_application::{ENDED_SESSION_RETENTION, Grant, Lookup, SessionStore};
use sidekey_domain::{
    Metadata as SessionMetadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Token,
};
use sidekey_local::InMemorySessionStore;
use sidekey_local::memory::{LIVE_SESSIONS_GAUGE, MAX_PURGE_SLEEP};

/// How many sessions the release test stores: a million in every profile. Unoptimised, the whole test
/// takes about 13 s on two cores, so debug builds need no smaller number.
const SESSIONS: u64 = 1_000_000;

use sidekey_test_support::ManualClock;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A metrics recorder that keeps only the live-sessions gauge, in an atomic the test can read.
#[derive(Default)]
struct LiveGauge(Arc<AtomicU64>);

impl LiveGauge {
    fn value(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Acquire))
    }
}

impl Recorder for LiveGauge {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        if key.name() == LIVE_SESSIONS_GAUGE { Gauge::from_arc(Arc::clone(&self.0)) } else { Gauge::noop() }
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Resident set size in MiB, from `/proc/self/statm` (its second field, in pages of 4 KiB: the page
/// size of Linux on x86-64 and of most arm64 kernels). Printed only: the allocator may keep freed pages.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// `token`'s session, issued at the manual clock's start for `ttl` seconds.
fn session(token: &Token, ttl: u64) -> Session {
    Session::issue(
        SessionId::of_token(&token.digest()),
        SecretRef::parse("openai-prod").unwrap(),
        None,
        SessionMetadata::default(),
        SessionPolicy::default().ttl(Some(ttl)).unwrap(),
        t0(),
    )
}

// Current-thread runtime on purpose: the store's futures never yield, so the purge task cannot run
// between the inserts and the explicit purge, and the purge count is exact.
#[tokio::test(flavor = "current_thread")]
async fn a_million_expired_sessions_give_their_memory_back() {
    let started = Instant::now();
    let clock = Arc::new(ManualClock::starting_at(t0()));
    let gauge = LiveGauge::default();
    // The store resolves its gauge handle when it is built, so only the construction needs the recorder.
    let store = metrics::with_local_recorder(&gauge, || InMemorySessionStore::new(clock.clone()));
    // One real key shared by every session, as the service does for sessions of the same secret.
    let secret = Arc::new(SecretValue::new("sk-live-shared".into()).unwrap());
    let rss_before = rss_mib();

    for i in 0..SESSIONS {
        // Tokens from a counter rather than from the OS: a million getrandom calls would only slow the
        // test down, and the store sees nothing but the keys derived from them.
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&i.to_le_bytes());
        let token = Token::from_random_bytes(&bytes);
        let grant = Grant { session: session(&token, 60), secret: Arc::clone(&secret) };
        store.insert(&token.keys(), grant).await.unwrap();
    }
    let (peak_len, peak_capacity, rss_peak) = (store.len(), store.capacity(), rss_mib());
    assert_eq!(peak_len as u64, SESSIONS);
    assert_eq!(gauge.value(), SESSIONS as f64);
    // Sessions of one key and subject share one profile, which holds the only stored reference.
    assert_eq!(Arc::strong_count(&secret), 2, "sessions share one key");

    clock.advance(Duration::from_secs(59));
    assert_eq!(store.purge_expired(), 0, "nothing is due one second before expiry");
    clock.advance(Duration::from_secs(1));
    // At expiry the sessions end: every reference to the real key goes, tombstones stay for the retention.
    assert_eq!(store.purge_expired(), 0, "ended sessions are remembered for the retention");
    assert_eq!(gauge.value(), 0.0, "the live gauge must come back to zero");
    assert_eq!(Arc::strong_count(&secret), 1, "the purge must drop every reference to the key");
    assert_eq!(store.len() as u64, SESSIONS);
    let rss_ended = rss_mib();

    clock.advance(ENDED_SESSION_RETENTION);
    let purge_started = Instant::now();
    let purged = store.purge_expired();
    let purge_time = purge_started.elapsed();

    let (after_capacity, rss_after) = (store.capacity(), rss_mib());
    println!(
        "{SESSIONS} sessions: capacity peak {peak_capacity}, after purge {after_capacity}; \
         RSS before {rss_before:.1} MiB, peak {rss_peak:.1} MiB, once ended {rss_ended:.1} MiB, \
         after purge {rss_after:.1} MiB; final purge took {purge_time:?}, whole test {:?}",
        started.elapsed()
    );
    assert_eq!(purged as u64, SESSIONS);
    assert_eq!(store.len(), 0);
    assert!(store.is_empty());
    assert!(
        after_capacity < peak_capacity / 8,
        "capacity {after_capacity} after the purge, {peak_capacity} at the peak"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_live_gauge_counts_active_sessions_only() {
    let clock = Arc::new(ManualClock::starting_at(t0()));
    let gauge = LiveGauge::default();
    let store = metrics::with_local_recorder(&gauge, || InMemorySessionStore::new(clock.clone()));
    let secret = Arc::new(SecretValue::new("sk-live".into()).unwrap());
    let mut digests = Vec::new();
    for ttl in [60, 60, 120] {
        let token = Token::generate().unwrap();
        let grant = Grant { session: session(&token, ttl), secret: Arc::clone(&secret) };
        store.insert(&token.keys(), grant).await.unwrap();
        digests.push(token.digest());
    }
    assert_eq!(gauge.value(), 3.0);
    assert!(store.revoke(&digests[0]).await.unwrap());
    assert!(!store.revoke(&digests[0]).await.unwrap());
    assert_eq!(gauge.value(), 2.0, "a tombstone is not a live session");
    assert_eq!(store.len(), 3, "but it is stored");
    clock.advance(Duration::from_secs(60));
    assert_eq!(store.purge_expired(), 0, "ended sessions are remembered for the retention");
    assert_eq!(gauge.value(), 1.0);
    clock.advance(ENDED_SESSION_RETENTION);
    assert_eq!(store.purge_expired(), 2);
    assert_eq!(gauge.value(), 0.0, "the 120 s session has ended by now too");
    drop(store);
    assert_eq!(gauge.value(), 0.0, "sessions dropped with the store leave the gauge");
}

// On tokio's paused clock, which the purge task sleeps on: the test waits out its capped sleeps at once.
#[tokio::test(start_paused = true)]
async fn the_purge_task_removes_expired_sessions_by_itself() {
    let clock = Arc::new(ManualClock::starting_at(t0()));
    let store = InMemorySessionStore::new(clock.clone());
    let token = Token::generate().unwrap();
    let secret = Arc::new(SecretValue::new("sk-live".into()).unwrap());
    store.insert(&token.keys(), Grant { session: session(&token, 60), secret }).await.unwrap();
    // Past the task's next wake-up (at most MAX_PURGE_SLEEP away), but not on the same tick.
    let past_a_wake_up = MAX_PURGE_SLEEP + Duration::from_millis(10);

    // Let the task run with nothing due, then move the manual clock past the expiry: the task sleeps on
    // tokio's timer, so it must notice the jump at its next capped wake-up.
    tokio::time::sleep(past_a_wake_up).await;
    assert_eq!(store.len(), 1, "nothing was due yet");
    clock.advance(Duration::from_secs(60));
    tokio::time::sleep(past_a_wake_up).await;
    assert!(matches!(store.find(&token.keys()).await.unwrap(), Lookup::Expired));

    clock.advance(ENDED_SESSION_RETENTION);
    tokio::time::sleep(past_a_wake_up).await;
    assert!(store.is_empty(), "the purge task did not forget the session at its next wake-up");
    assert!(matches!(store.find(&token.keys()).await.unwrap(), Lookup::Missing));
}

#[tokio::test(flavor = "current_thread")]
async fn the_purge_task_stops_when_the_store_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let clock = Arc::new(ManualClock::starting_at(t0()));
    let before = metrics.num_alive_tasks();
    let store = InMemorySessionStore::new(clock.clone());
    assert_eq!(metrics.num_alive_tasks(), before + 1);
    // Let the task reach its wait, so the drop finds it sleeping.
    tokio::task::yield_now().await;
    drop(store);

    let deadline = Instant::now() + Duration::from_secs(1);
    while metrics.num_alive_tasks() > before {
        assert!(Instant::now() < deadline, "the purge task outlived its store");
        tokio::task::yield_now().await;
    }
    assert_eq!(Arc::strong_count(&clock), 1, "the store's state was freed");
}
