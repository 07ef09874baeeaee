//! The bridge end to end over the in-process bus: an [`EventBusSecretSource`] asking, one or two
//! [`Bridge`]s answering, rotation announcements reaching [`spawn_rotation_listener`], and rogues on the
//! bus who do not hold the bridge secret.
//!
//! Every message sent goes through [`RecordingBus`], a wrapper around [`InProcessBus`] that keeps a copy
//! of it: the tests count requests and replies with it, and check that no real key crosses the bus in
//! clear.
//!
//! Most tests run on tokio's paused clock: the timeouts, the slow sources and the bridge's watch all
//! use tokio timers, so a 200 ms timeout takes no real time and lands exactly, and a test that waits
//! for something that never comes fails at once (the paused clock jumps to the deadline) instead of
//! hanging.
//!
//! `cargo test -p sidekey-adapters --test bridge_in_process`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sidekey_application::{BusError, BusFeed, Clock, EventBus, SecretSource, SecretSourceError};
use sidekey_bridge::protocol::{
    Answer, SecretAnnouncement, SecretReply, SecretRequest, VerifiedAnnouncement, VerifiedRequest,
};
use sidekey_bridge::{
    AnnouncementReason, Bridge, BridgeSecret, BridgeSettings, BusSourceSettings, EventBusSecretSource,
    InProcessBus, announce, spawn_rotation_listener,
};
use sidekey_domain::{SecretRef, SecretValue};
use sidekey_local::SystemClock;
use sidekey_test_support::ManualClock;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The requesters' timeout in most tests.
const TIMEOUT: Duration = Duration::from_millis(200);

/// How long a test waits for something that must happen (a request on the bus, an announcement). On
/// the paused clock, waiting in vain costs no real time.
const SURELY: Duration = Duration::from_secs(10);

fn secret() -> BridgeSecret {
    BridgeSecret::new("the-shared-bridge-secret-0123456789").expect("a strong secret")
}

/// A secret of the same strength that is not the bridge's: what a rogue on the bus holds.
fn rogue_secret() -> BridgeSecret {
    BridgeSecret::new("a-rogue-guess-at-the-bridge-secret").expect("a strong secret")
}

fn name(text: &str) -> SecretRef {
    SecretRef::parse(text).expect("a valid secret_key_id")
}

fn value(text: &str) -> SecretValue {
    SecretValue::new(text.to_owned()).expect("a valid key")
}

fn wall_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The key's text, so that results compare with `assert_eq!` (`SecretValue` has no `PartialEq`).
fn text(result: Result<SecretValue, SecretSourceError>) -> Result<String, SecretSourceError> {
    result.map(|value| value.expose().to_owned())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------------
// A bridge's source whose keys, delay and failures the test changes at run time, and that counts its
// fetches.
// ---------------------------------------------------------------------------------------------------

#[derive(Default)]
struct ScriptedSource {
    /// By name: the key, or the error to answer. A name absent is `NotFound`.
    entries: Mutex<HashMap<String, Result<String, SecretSourceError>>>,
    /// How long each fetch takes (read when the fetch starts, with the entry).
    delay: Mutex<Duration>,
    /// When set, each fetch also waits for a permit of it (the test opens the gate).
    gate: Mutex<Option<Arc<Semaphore>>>,
    fetches: AtomicUsize,
}

impl ScriptedSource {
    fn with(keys: &[(&str, &str)]) -> Arc<Self> {
        let source = Self::default();
        for (name, key) in keys {
            source.set(name, key);
        }
        Arc::new(source)
    }

    fn set(&self, name: &str, key: &str) {
        lock(&self.entries).insert(name.to_owned(), Ok(key.to_owned()));
    }

    fn fail(&self, name: &str, error: SecretSourceError) {
        lock(&self.entries).insert(name.to_owned(), Err(error));
    }

    fn remove(&self, name: &str) {
        lock(&self.entries).remove(name);
    }

    fn set_delay(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }

    fn close_gate(&self) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        *lock(&self.gate) = Some(gate.clone());
        gate
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretSource for ScriptedSource {
    async fn fetch(&self, secret_ref: &SecretRef) -> Result<SecretValue, SecretSourceError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let entry = lock(&self.entries).get(secret_ref.as_str()).cloned();
        let delay = *lock(&self.delay);
        let gate = lock(&self.gate).clone();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await.expect("the gate stays open");
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match entry {
            None => Err(SecretSourceError::NotFound),
            Some(Ok(key)) => Ok(value(&key)),
            Some(Err(error)) => Err(error),
        }
    }

    async fn ping(&self) -> Result<(), SecretSourceError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// The bus, with a copy of everything sent on it.
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Request,
    Reply,
    Announcement,
}

struct RecordingBus {
    inner: InProcessBus,
    sent: Mutex<Vec<(Sent, Vec<u8>)>>,
}

impl RecordingBus {
    fn new() -> Arc<Self> {
        Arc::new(Self { inner: InProcessBus::new(), sent: Mutex::new(Vec::new()) })
    }

    fn dyn_bus(self: &Arc<Self>) -> Arc<dyn EventBus> {
        self.clone()
    }

    fn sent(&self, kind: Sent) -> Vec<Vec<u8>> {
        lock(&self.sent).iter().filter(|(sent, _)| *sent == kind).map(|(_, bytes)| bytes.clone()).collect()
    }

    fn count(&self, kind: Sent) -> usize {
        lock(&self.sent).iter().filter(|(sent, _)| *sent == kind).count()
    }

    fn all(&self) -> Vec<(Sent, Vec<u8>)> {
        lock(&self.sent).clone()
    }

    fn record(&self, kind: Sent, bytes: &[u8]) {
        lock(&self.sent).push((kind, bytes.to_vec()));
    }
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn send_request(&self, request: Vec<u8>) -> Result<(), BusError> {
        self.record(Sent::Request, &request);
        self.inner.send_request(request).await
    }

    async fn send_reply(&self, inbox: &str, reply: Vec<u8>) -> Result<(), BusError> {
        self.record(Sent::Reply, &reply);
        self.inner.send_reply(inbox, reply).await
    }

    async fn announce(&self, announcement: Vec<u8>) -> Result<(), BusError> {
        self.record(Sent::Announcement, &announcement);
        self.inner.announce(announcement).await
    }

    async fn open_inbox(&self) -> Result<(String, Box<dyn BusFeed>), BusError> {
        self.inner.open_inbox().await
    }

    async fn requests(&self) -> Result<Box<dyn BusFeed>, BusError> {
        self.inner.requests().await
    }

    async fn announcements(&self) -> Result<Box<dyn BusFeed>, BusError> {
        self.inner.announcements().await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }
}

/// The ids of the recorded requests, in order.
fn request_ids(bus: &RecordingBus) -> Vec<String> {
    bus.sent(Sent::Request)
        .iter()
        .map(|bytes| serde_json::from_slice::<SecretRequest>(bytes).expect("a request").id)
        .collect()
}

/// The ids of the recorded replies, in order.
fn reply_ids(bus: &RecordingBus) -> Vec<String> {
    bus.sent(Sent::Reply)
        .iter()
        .map(|bytes| SecretReply::parse(bytes).expect("a reply").0.hyphenated().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Starting the parties.
// ---------------------------------------------------------------------------------------------------

async fn requester(bus: &Arc<RecordingBus>, secret: BridgeSecret, timeout: Duration) -> EventBusSecretSource {
    requester_with(bus, secret, BusSourceSettings { timeout, ..BusSourceSettings::default() }).await
}

async fn requester_with(
    bus: &Arc<RecordingBus>,
    secret: BridgeSecret,
    settings: BusSourceSettings,
) -> EventBusSecretSource {
    EventBusSecretSource::start(bus.dyn_bus(), secret, wall_clock(), settings)
        .await
        .expect("the in-process bus opens an inbox")
}

/// Bridge settings without the watch, so that the sources' fetch counters count requests only.
fn unwatched() -> BridgeSettings {
    BridgeSettings { watch_interval: None, ..BridgeSettings::default() }
}

struct RunningBridge {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), BusError>>,
}

impl RunningBridge {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the bridge task did not panic").expect("the bridge ran");
    }
}

fn start_bridge(
    bus: &Arc<RecordingBus>,
    secret: BridgeSecret,
    source: &Arc<ScriptedSource>,
    settings: BridgeSettings,
) -> RunningBridge {
    start_bridge_with_clock(bus, secret, source, settings, wall_clock())
}

fn start_bridge_with_clock(
    bus: &Arc<RecordingBus>,
    secret: BridgeSecret,
    source: &Arc<ScriptedSource>,
    settings: BridgeSettings,
    clock: Arc<dyn Clock>,
) -> RunningBridge {
    let bridge = Bridge::new(bus.dyn_bus(), secret, source.clone(), clock, settings).expect("randomness");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(bridge.run(async move {
        let _ = stopped.await;
    }));
    RunningBridge { stop, task }
}

type Announcements = mpsc::UnboundedReceiver<VerifiedAnnouncement>;

/// A rotation listener that hands each announcement it acts on to the returned channel. Returns once
/// the listener is subscribed (on the paused clock, the sleep runs every task until idle first).
async fn listener(bus: &Arc<RecordingBus>) -> (JoinHandle<()>, Announcements) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let task = spawn_rotation_listener(bus.dyn_bus(), secret(), wall_clock(), move |announcement| {
        let sender = sender.clone();
        async move {
            let _ = sender.send(announcement);
        }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    (task, receiver)
}

async fn next_announcement(announcements: &mut Announcements) -> VerifiedAnnouncement {
    tokio::time::timeout(SURELY, announcements.recv())
        .await
        .expect("an announcement in time")
        .expect("the listener is running")
}

/// Asserts that the listener acted on nothing more: a fresh, authentic announcement sent now must be the
/// next one it hands over (it handles announcements in order, so everything sent before has been
/// handled by then), and nothing after it.
async fn assert_no_more_announcements(bus: &Arc<RecordingBus>, announcements: &mut Announcements) {
    let barrier = name("barrier");
    announce(bus.as_ref(), &secret(), &barrier, AnnouncementReason::Withdrawn, SystemTime::now())
        .await
        .expect("the in-process bus announces");
    let next = next_announcement(announcements).await;
    assert_eq!(next.secret_ref, barrier, "the listener acted on {next:?} before the barrier");
    assert!(announcements.try_recv().is_err(), "the listener acted on something after the barrier");
}

/// The next request on the bus, read as a rogue (or a bridge) would.
async fn take_request(bus: &Arc<RecordingBus>) -> Vec<u8> {
    let mut requests = bus.requests().await.expect("the in-process bus gives the requests");
    tokio::time::timeout(SURELY, requests.next())
        .await
        .expect("a request on the bus in time")
        .expect("the bus is open")
}

// ---------------------------------------------------------------------------------------------------
// 1. The answers.
// ---------------------------------------------------------------------------------------------------

/// A bridge's found, not-found and failed answers reach the requester as the key, `NotFound` and
/// `Failed`.
#[tokio::test(start_paused = true)]
async fn a_bridge_answers_found_not_found_and_failed() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-openai-real-key")]);
    source.fail("broken", SecretSourceError::Failed("disk on fire".to_owned()));
    source.fail("sealed", SecretSourceError::Unavailable("vault sealed".to_owned()));
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let requester = requester(&bus, secret(), TIMEOUT).await;

    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-openai-real-key".to_owned()));
    assert_eq!(text(requester.fetch(&name("missing")).await), Err(SecretSourceError::NotFound));
    match requester.fetch(&name("broken")).await {
        Err(SecretSourceError::Failed(cause)) => assert!(cause.contains("disk on fire"), "{cause}"),
        other => panic!("expected Failed, got {:?}", text(other)),
    }
    match requester.fetch(&name("sealed")).await {
        Err(SecretSourceError::Failed(cause)) => assert!(cause.contains("vault sealed"), "{cause}"),
        other => panic!("expected Failed, got {:?}", text(other)),
    }
    assert_eq!(source.fetches(), 4);
    assert_eq!(requester.pending(), 0);
}

// ---------------------------------------------------------------------------------------------------
// 2. Timeouts and the bound on waiting requests.
// ---------------------------------------------------------------------------------------------------

/// With no bridge, a fetch waits exactly its timeout, says `Timeout`, and is forgotten.
#[tokio::test(start_paused = true)]
async fn without_a_bridge_a_fetch_times_out_and_is_forgotten() {
    let bus = RecordingBus::new();
    let requester = requester(&bus, secret(), TIMEOUT).await;
    let started = Instant::now();
    let fetch = tokio::spawn({
        let requester = requester.clone();
        async move { text(requester.fetch(&name("openai")).await) }
    });
    tokio::time::sleep(TIMEOUT / 2).await;
    assert_eq!(requester.pending(), 1, "the request waits");

    assert_eq!(fetch.await.expect("no panic"), Err(SecretSourceError::Timeout(TIMEOUT)));
    let waited = started.elapsed();
    assert!(waited >= TIMEOUT && waited < TIMEOUT * 2, "waited {waited:?}");
    assert_eq!(requester.pending(), 0, "a request that timed out is forgotten");
    assert_eq!(bus.count(Sent::Request), 1);
}

/// A flood of fetches for distinct names at a dead bridge: at most `max_pending` wait, the rest are
/// refused at once, and after the timeout nothing is left (the same number can wait again).
#[tokio::test(start_paused = true)]
async fn a_flood_waits_at_most_max_pending_and_leaks_nothing() {
    const FLOOD: usize = 5000;
    const MAX_PENDING: usize = 100;
    let bus = RecordingBus::new();
    let requester =
        requester_with(&bus, secret(), BusSourceSettings { timeout: TIMEOUT, max_pending: MAX_PENDING })
            .await;

    let started = Instant::now();
    let fetches: Vec<_> = (0..FLOOD)
        .map(|i| {
            let requester = requester.clone();
            tokio::spawn(async move {
                let outcome = text(requester.fetch(&name(&format!("flood-{i}"))).await);
                (outcome, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(TIMEOUT / 2).await;
    assert_eq!(requester.pending(), MAX_PENDING, "exactly max_pending requests wait");

    let (mut timed_out, mut refused) = (0, 0);
    for fetch in fetches {
        match fetch.await.expect("no panic") {
            (Err(SecretSourceError::Timeout(_)), after) => {
                assert!(after >= TIMEOUT, "timed out after {after:?}");
                timed_out += 1;
            }
            (Err(SecretSourceError::Unavailable(_)), after) => {
                assert!(after < TIMEOUT / 2, "refused only after {after:?}");
                refused += 1;
            }
            (other, after) => panic!("unexpected {other:?} after {after:?}"),
        }
    }
    assert_eq!((timed_out, refused), (MAX_PENDING, FLOOD - MAX_PENDING));
    assert_eq!(bus.count(Sent::Request), MAX_PENDING, "refused fetches send nothing");
    assert_eq!(requester.pending(), 0, "every waiting request is forgotten at its timeout");

    // Nothing is left in the single-flight map either: a second wave gets every slot again.
    let second: Vec<_> = (0..MAX_PENDING)
        .map(|i| {
            let requester = requester.clone();
            tokio::spawn(async move { text(requester.fetch(&name(&format!("second-{i}"))).await) })
        })
        .collect();
    for fetch in second {
        assert_eq!(fetch.await.expect("no panic"), Err(SecretSourceError::Timeout(TIMEOUT)));
    }
    assert_eq!(requester.pending(), 0);
}

/// `EventBusSecretSource::start` promises that its reply task "ends when the source and its clones are
/// dropped". It does not: the task notices the drop only when a message next arrives in the inbox, and
/// the bus keeps every inbox open, so no message ever comes. Each requester started and dropped leaves
/// a task (and, on the in-process bus, an inbox) behind for the life of the process.
#[tokio::test(start_paused = true)]
async fn a_dropped_requester_leaves_no_task_behind() {
    let bus = RecordingBus::new();
    let metrics = tokio::runtime::Handle::current().metrics();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let before = metrics.num_alive_tasks();
    let mut requesters = Vec::new();
    for _ in 0..10 {
        requesters.push(requester(&bus, secret(), TIMEOUT).await);
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(metrics.num_alive_tasks(), before + 10, "each requester runs one reply task");

    drop(requesters);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(metrics.num_alive_tasks(), before, "the reply tasks of dropped requesters still run");
}

// ---------------------------------------------------------------------------------------------------
// 3. Single flight.
// ---------------------------------------------------------------------------------------------------

/// 50 concurrent fetches of one name: one request on the bus, one fetch from the bridge's source, 50
/// keys. The next fetch asks again (nothing is cached past the call).
#[tokio::test(start_paused = true)]
async fn concurrent_fetches_of_one_name_share_one_request() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-shared-key")]);
    source.set_delay(Duration::from_millis(50));
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let requester = requester(&bus, secret(), Duration::from_secs(2)).await;

    let fetches: Vec<_> = (0..50)
        .map(|_| {
            let requester = requester.clone();
            tokio::spawn(async move { text(requester.fetch(&name("openai")).await) })
        })
        .collect();
    for fetch in fetches {
        assert_eq!(fetch.await.expect("no panic"), Ok("sk-shared-key".to_owned()));
    }
    assert_eq!(source.fetches(), 1, "one fetch from the bridge's source");
    assert_eq!(bus.count(Sent::Request), 1, "one request on the bus");
    assert_eq!(bus.count(Sent::Reply), 1, "one reply");
    assert_eq!(requester.pending(), 0);

    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-shared-key".to_owned()));
    assert_eq!(source.fetches(), 2, "a later fetch asks again");
}

/// The same on a multi-threaded runtime, where the fetches really race: the bridge's source is held
/// until all 50 callers are inside `fetch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_holds_across_threads() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-shared-key")]);
    let gate = source.close_gate();
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let requester = requester(&bus, secret(), Duration::from_secs(10)).await;
    let started = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));

    let fetches: Vec<_> = (0..50)
        .map(|_| {
            let (requester, started, barrier) = (requester.clone(), started.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                started.fetch_add(1, Ordering::SeqCst);
                text(requester.fetch(&name("openai")).await)
            })
        })
        .collect();
    tokio::time::timeout(SURELY, async {
        while started.load(Ordering::SeqCst) < 50 || source.fetches() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("all callers start and the bridge gets the request");
    // The callers join the request in the same poll in which they counted themselves; give the last
    // one a moment, then let the bridge answer.
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.add_permits(1000);

    for fetch in fetches {
        assert_eq!(fetch.await.expect("no panic"), Ok("sk-shared-key".to_owned()));
    }
    assert_eq!(source.fetches(), 1);
    assert_eq!(bus.count(Sent::Request), 1);
    assert_eq!(requester.pending(), 0);
}

// ---------------------------------------------------------------------------------------------------
// 4. A slow bridge.
// ---------------------------------------------------------------------------------------------------

/// A bridge slower than the timeout: `Timeout`; its late reply is dropped without harm, and the next
/// fetch succeeds once the bridge is fast again.
#[tokio::test(start_paused = true)]
async fn a_slow_bridge_times_out_and_its_late_reply_is_harmless() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-real-key")]);
    source.set_delay(TIMEOUT * 3);
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let requester = requester(&bus, secret(), TIMEOUT).await;

    let started = Instant::now();
    assert_eq!(text(requester.fetch(&name("openai")).await), Err(SecretSourceError::Timeout(TIMEOUT)));
    assert!(started.elapsed() < TIMEOUT * 2, "gave up after {:?}", started.elapsed());
    assert_eq!(requester.pending(), 0);

    // The late reply arrives, to an inbox where nothing waits for it.
    tokio::time::timeout(SURELY, async {
        while bus.count(Sent::Reply) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slow bridge replies at last");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(requester.pending(), 0);

    source.set_delay(Duration::ZERO);
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-real-key".to_owned()));
    assert_eq!(source.fetches(), 2);
}

/// A late reply that arrives while a new request for the same name waits in the same inbox is not
/// taken for the new request's answer: the new request gets the key its own reply carries.
#[tokio::test(start_paused = true)]
async fn a_late_reply_is_not_taken_for_the_next_requests_answer() {
    let timeout = Duration::from_millis(400);
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-old-key")]);
    // The first request: the bridge reads the old key at once and replies at 500 ms, after the timeout.
    source.set_delay(Duration::from_millis(500));
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let requester = requester(&bus, secret(), timeout).await;
    assert_eq!(text(requester.fetch(&name("openai")).await), Err(SecretSourceError::Timeout(timeout)));

    // The second, from 400 ms: the bridge reads the new key and replies at 700 ms, within the timeout.
    // The old reply lands at 500 ms, while the second request waits.
    source.set("openai", "sk-new-key");
    source.set_delay(Duration::from_millis(300));
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-new-key".to_owned()));

    assert_eq!(reply_ids(&bus), request_ids(&bus), "the late reply came first, while the second waited");
    assert_eq!(requester.pending(), 0);
}

/// A bridge whose clock says a request expired (past its clock skew) drops it unanswered; within the
/// skew, it answers.
#[tokio::test(start_paused = true)]
async fn a_bridge_drops_requests_expired_by_its_clock() {
    // The requester stamps its requests with the system clock; the bridge's clock is set ahead of it.
    let ahead = |by: Duration| Arc::new(ManualClock::starting_at(SystemTime::now() + by));
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-real-key")]);
    let requester = requester(&bus, secret(), TIMEOUT).await;

    let late =
        start_bridge_with_clock(&bus, secret(), &source, unwatched(), ahead(Duration::from_secs(3600)));
    assert_eq!(text(requester.fetch(&name("openai")).await), Err(SecretSourceError::Timeout(TIMEOUT)));
    assert_eq!(source.fetches(), 0, "an expired request is not even looked up");
    assert_eq!(bus.count(Sent::Reply), 0);
    late.stop().await;

    let _skewed =
        start_bridge_with_clock(&bus, secret(), &source, unwatched(), ahead(Duration::from_secs(10)));
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-real-key".to_owned()));
}

// ---------------------------------------------------------------------------------------------------
// 5. Rogues on the bus.
// ---------------------------------------------------------------------------------------------------

/// The bridge request a rogue reads off the bus, as a `VerifiedRequest` so that it can be answered with
/// the crate's sealing. The test verifies it with the real secret only because a `VerifiedRequest` can
/// be made no other way: it holds nothing but what the request carries in clear (its id, `reply_to`,
/// `secret_key_id` and public key), which the rogue reads without any secret.
fn as_rogue_reads_it(request: &[u8]) -> VerifiedRequest {
    SecretRequest::verify(request, &secret()).expect("a genuine request")
}

/// With no bridge, a rogue answers each request with a reply sealed to the requester under another
/// secret (found with a key of its choice, not found, failed): none is believed, every fetch times out.
#[tokio::test(start_paused = true)]
async fn a_reply_sealed_under_another_secret_is_not_believed() {
    let bus = RecordingBus::new();
    let requester = requester(&bus, secret(), TIMEOUT).await;
    let forgeries =
        [Answer::Found(value("sk-rogue-key")), Answer::NotFound, Answer::Failed("go away".to_owned())];
    for (i, forgery) in forgeries.iter().enumerate() {
        let fetch = tokio::spawn({
            let requester = requester.clone();
            async move { text(requester.fetch(&name(&format!("openai-{i}"))).await) }
        });
        let request = as_rogue_reads_it(&take_request(&bus).await);
        let forged = SecretReply::seal(&rogue_secret(), &request, forgery).expect("randomness");
        bus.send_reply(&request.reply_to, forged.to_bytes()).await.expect("sent");

        assert_eq!(fetch.await.expect("no panic"), Err(SecretSourceError::Timeout(TIMEOUT)), "{forgery:?}");
        assert_eq!(requester.pending(), 0);
    }
    assert_eq!(bus.count(Sent::Reply), forgeries.len(), "every forged reply was delivered");
}

/// A forged reply does not end the wait: the genuine reply after it is still taken. (Also the control
/// for the test above: the rogue's harness does produce replies that open, given the real secret.)
#[tokio::test(start_paused = true)]
async fn a_forged_reply_does_not_stop_the_genuine_one() {
    let bus = RecordingBus::new();
    let requester = requester(&bus, secret(), TIMEOUT).await;
    let fetch = tokio::spawn({
        let requester = requester.clone();
        async move { text(requester.fetch(&name("openai")).await) }
    });
    let request = as_rogue_reads_it(&take_request(&bus).await);
    let forged =
        SecretReply::seal(&rogue_secret(), &request, &Answer::Found(value("sk-rogue-key"))).expect("random");
    let genuine =
        SecretReply::seal(&secret(), &request, &Answer::Found(value("sk-real-key"))).expect("random");
    bus.send_reply(&request.reply_to, forged.to_bytes()).await.expect("sent");
    bus.send_reply(&request.reply_to, genuine.to_bytes()).await.expect("sent");

    assert_eq!(fetch.await.expect("no panic"), Ok("sk-real-key".to_owned()));
    assert_eq!(requester.pending(), 0);
}

/// A genuine reply, replayed with its id rewritten to a later request for the same name, does not open
/// (the id and the requester's key are bound into it): the later fetch times out.
#[tokio::test(start_paused = true)]
async fn a_genuine_reply_readdressed_to_another_request_is_refused() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-real-key")]);
    let requester = requester(&bus, secret(), TIMEOUT).await;
    let bridge = start_bridge(&bus, secret(), &source, unwatched());
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-real-key".to_owned()));
    bridge.stop().await;
    let old_reply = bus.sent(Sent::Reply).pop().expect("the bridge's reply");

    let fetch = tokio::spawn({
        let requester = requester.clone();
        async move { text(requester.fetch(&name("openai")).await) }
    });
    let request: SecretRequest = serde_json::from_slice(&take_request(&bus).await).expect("a request");
    // As it was: nothing waits for its id any more.
    bus.send_reply(&request.reply_to, old_reply.clone()).await.expect("sent");
    // Readdressed to the waiting request.
    let (_, mut replayed) = SecretReply::parse(&old_reply).expect("a reply");
    replayed.id.clone_from(&request.id);
    bus.send_reply(&request.reply_to, replayed.to_bytes()).await.expect("sent");

    assert_eq!(fetch.await.expect("no panic"), Err(SecretSourceError::Timeout(TIMEOUT)));
    assert_eq!(requester.pending(), 0);
}

/// A request authenticated with another secret is not answered: the bridge does not even look the
/// key up, and the fetch times out. A genuine request right after it is answered (the bridge was up).
#[tokio::test(start_paused = true)]
async fn a_bridge_ignores_requests_made_with_another_secret() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-real-key")]);
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let rogue = requester(&bus, rogue_secret(), TIMEOUT).await;

    assert_eq!(text(rogue.fetch(&name("openai")).await), Err(SecretSourceError::Timeout(TIMEOUT)));
    assert_eq!(source.fetches(), 0, "the bridge did not look the key up");
    assert_eq!(bus.count(Sent::Reply), 0, "the bridge did not answer");
    assert_eq!(rogue.pending(), 0);

    let genuine = requester(&bus, secret(), TIMEOUT).await;
    assert_eq!(text(genuine.fetch(&name("openai")).await), Ok("sk-real-key".to_owned()));
    assert_eq!(source.fetches(), 1);
    assert_eq!(bus.count(Sent::Reply), 1);
}

// ---------------------------------------------------------------------------------------------------
// 6. Two bridges.
// ---------------------------------------------------------------------------------------------------

/// Two bridges on one bus: every request is answered exactly once, by one of them, with the right key;
/// and both take a share of the work.
#[tokio::test(start_paused = true)]
async fn two_bridges_answer_each_request_exactly_once() {
    const NAMES: usize = 20;
    let keys: Vec<(String, String)> =
        (0..NAMES).map(|i| (format!("key-{i}"), format!("sk-real-key-number-{i}"))).collect();
    let borrowed: Vec<(&str, &str)> = keys.iter().map(|(n, k)| (n.as_str(), k.as_str())).collect();
    let (left, right) = (ScriptedSource::with(&borrowed), ScriptedSource::with(&borrowed));
    left.set_delay(Duration::from_millis(5));
    right.set_delay(Duration::from_millis(5));
    let bus = RecordingBus::new();
    let _left = start_bridge(&bus, secret(), &left, unwatched());
    let _right = start_bridge(&bus, secret(), &right, unwatched());
    let requester = requester(&bus, secret(), Duration::from_secs(2)).await;

    // Concurrently, then one name again and again in sequence.
    let fetches: Vec<_> = keys
        .iter()
        .map(|(n, k)| {
            let (requester, n, k) = (requester.clone(), n.clone(), k.clone());
            tokio::spawn(async move { (text(requester.fetch(&name(&n)).await), k) })
        })
        .collect();
    for fetch in fetches {
        let (got, expected) = fetch.await.expect("no panic");
        assert_eq!(got, Ok(expected));
    }
    for _ in 0..5 {
        assert_eq!(text(requester.fetch(&name("key-7")).await), Ok("sk-real-key-number-7".to_owned()));
    }

    let total = NAMES + 5;
    assert_eq!(left.fetches() + right.fetches(), total, "each request was looked up once");
    assert!(left.fetches() > 0 && right.fetches() > 0, "{} / {}", left.fetches(), right.fetches());
    let mut requests = request_ids(&bus);
    let mut replies = reply_ids(&bus);
    assert_eq!(requests.len(), total);
    requests.sort();
    replies.sort();
    assert_eq!(replies, requests, "one reply for each request, none twice");
    assert_eq!(requester.pending(), 0);
}

// ---------------------------------------------------------------------------------------------------
// 7. Rotation.
// ---------------------------------------------------------------------------------------------------

/// The bridge's watch notices that a key it served changed (`Rotated`, once) and then vanished
/// (`Withdrawn`, once); a key that stays the same is never announced.
#[tokio::test(start_paused = true)]
async fn the_watch_announces_a_rotated_then_a_withdrawn_key() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("rotating", "sk-first-key"), ("steady", "sk-steady-key")]);
    let every = Duration::from_millis(100);
    let _bridge =
        start_bridge(&bus, secret(), &source, BridgeSettings { watch_interval: Some(every), ..unwatched() });
    let (_listener, mut announcements) = listener(&bus).await;
    let requester = requester(&bus, secret(), TIMEOUT).await;
    assert_eq!(text(requester.fetch(&name("rotating")).await), Ok("sk-first-key".to_owned()));
    assert_eq!(text(requester.fetch(&name("steady")).await), Ok("sk-steady-key".to_owned()));
    tokio::time::sleep(every * 5).await;
    assert_no_more_announcements(&bus, &mut announcements).await;

    source.set("rotating", "sk-second-key");
    let rotated = next_announcement(&mut announcements).await;
    assert_eq!((rotated.secret_ref, rotated.reason), (name("rotating"), AnnouncementReason::Rotated));
    tokio::time::sleep(every * 5).await;
    assert_no_more_announcements(&bus, &mut announcements).await;

    source.remove("rotating");
    let withdrawn = next_announcement(&mut announcements).await;
    assert_eq!((withdrawn.secret_ref, withdrawn.reason), (name("rotating"), AnnouncementReason::Withdrawn));
    tokio::time::sleep(every * 5).await;
    assert_no_more_announcements(&bus, &mut announcements).await;
}

/// A bridge that serves a key different from the one it served before announces the rotation at once,
/// without waiting for its watch.
#[tokio::test(start_paused = true)]
async fn serving_a_changed_key_announces_the_rotation() {
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", "sk-first-key")]);
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let (_listener, mut announcements) = listener(&bus).await;
    let requester = requester(&bus, secret(), TIMEOUT).await;
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-first-key".to_owned()));
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-first-key".to_owned()));
    source.set("openai", "sk-second-key");
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok("sk-second-key".to_owned()));

    let rotated = next_announcement(&mut announcements).await;
    assert_eq!((rotated.secret_ref, rotated.reason), (name("openai"), AnnouncementReason::Rotated));
    assert_no_more_announcements(&bus, &mut announcements).await;
}

/// The listener acts once on an authentic, fresh announcement, and ignores its replay, one made with
/// another secret, an altered one, one 10 minutes old and one 10 minutes in the future.
#[tokio::test(start_paused = true)]
async fn the_listener_acts_once_on_each_fresh_authentic_announcement() {
    let bus = RecordingBus::new();
    let (_listener, mut announcements) = listener(&bus).await;
    let now = SystemTime::now();

    announce(bus.as_ref(), &secret(), &name("openai"), AnnouncementReason::Rotated, now).await.expect("sent");
    let first = next_announcement(&mut announcements).await;
    assert_eq!((first.secret_ref.clone(), first.reason), (name("openai"), AnnouncementReason::Rotated));
    let sent_ms = u64::try_from(now.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_millis())
        .expect("in range");
    assert_eq!(first.at_ms, sent_ms);

    // The same bytes again, twice.
    let original = bus.sent(Sent::Announcement).pop().expect("the announcement");
    bus.announce(original.clone()).await.expect("sent");
    bus.announce(original.clone()).await.expect("sent");
    // Another secret.
    announce(bus.as_ref(), &rogue_secret(), &name("anthropic"), AnnouncementReason::Withdrawn, now)
        .await
        .expect("sent");
    // Altered: another reason under the original's MAC.
    let mut altered: SecretAnnouncement = serde_json::from_slice(&original).expect("an announcement");
    altered.reason = AnnouncementReason::Withdrawn;
    altered.id = uuid::Uuid::new_v4().hyphenated().to_string();
    bus.announce(altered.to_bytes()).await.expect("sent");
    // Stale, and from the future.
    let ten_minutes = Duration::from_secs(600);
    announce(bus.as_ref(), &secret(), &name("stale"), AnnouncementReason::Rotated, now - ten_minutes)
        .await
        .expect("sent");
    announce(bus.as_ref(), &secret(), &name("future"), AnnouncementReason::Rotated, now + ten_minutes)
        .await
        .expect("sent");

    assert_no_more_announcements(&bus, &mut announcements).await;
}

// ---------------------------------------------------------------------------------------------------
// 8. The key on the bus.
// ---------------------------------------------------------------------------------------------------

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Every string in a JSON document, however deep.
fn strings(json: &serde_json::Value, out: &mut Vec<String>) {
    match json {
        serde_json::Value::String(text) => out.push(text.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        serde_json::Value::Object(fields) => fields.values().for_each(|field| strings(field, out)),
        _ => {}
    }
}

/// Where `key` appears in a message: in clear, hex-encoded, or inside a field that decodes as base64.
fn find_key(messages: &[(Sent, Vec<u8>)], key: &str) -> Option<String> {
    let key = key.as_bytes();
    let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
    for (kind, message) in messages {
        if contains(message, key) {
            return Some(format!("in clear in a {kind:?}"));
        }
        if contains(message, hex.as_bytes()) {
            return Some(format!("in hex in a {kind:?}"));
        }
        let json: serde_json::Value = serde_json::from_slice(message).expect("every message is JSON");
        let mut fields = Vec::new();
        strings(&json, &mut fields);
        for field in fields {
            for decoded in [URL_SAFE_NO_PAD.decode(&field), STANDARD.decode(&field)].into_iter().flatten() {
                if contains(&decoded, key) {
                    return Some(format!("base64-encoded in a {kind:?}"));
                }
            }
        }
    }
    None
}

/// Requests, replies (found, not found, failed) and the rotation announcement of a served key: none of
/// them carries the key, old or new, in any readable form.
#[tokio::test(start_paused = true)]
async fn the_real_key_never_crosses_the_bus_in_clear() {
    let first = "sk-live-0123456789-the-first-real-key";
    let second = "sk-live-9876543210-the-second-real-key";
    let bus = RecordingBus::new();
    let source = ScriptedSource::with(&[("openai", first)]);
    source.fail("broken", SecretSourceError::Failed("the vault is sealed".to_owned()));
    let _bridge = start_bridge(&bus, secret(), &source, unwatched());
    let (_listener, mut announcements) = listener(&bus).await;
    let requester = requester(&bus, secret(), TIMEOUT).await;

    assert_eq!(text(requester.fetch(&name("openai")).await), Ok(first.to_owned()));
    assert_eq!(text(requester.fetch(&name("missing")).await), Err(SecretSourceError::NotFound));
    assert!(matches!(requester.fetch(&name("broken")).await, Err(SecretSourceError::Failed(_))));
    source.set("openai", second);
    assert_eq!(text(requester.fetch(&name("openai")).await), Ok(second.to_owned()));
    let rotated = next_announcement(&mut announcements).await;
    assert_eq!(rotated.secret_ref, name("openai"));

    // The recording saw the traffic: four requests, four replies, the announcement.
    assert_eq!((bus.count(Sent::Request), bus.count(Sent::Reply)), (4, 4));
    assert_eq!(bus.count(Sent::Announcement), 1);
    let sent = bus.all();
    assert_eq!(find_key(&sent, first), None);
    assert_eq!(find_key(&sent, second), None);

    // The check finds a key that is there.
    let exposed = format!("{{\"secret\":\"{first}\"}}").into_bytes();
    assert!(find_key(&[(Sent::Reply, exposed)], first).is_some());
    let encoded =
        format!("{{\"sealed\":\"{}\"}}", STANDARD.encode(format!("{{\"k\":\"{first}\"}}"))).into_bytes();
    assert!(find_key(&[(Sent::Reply, encoded)], first).is_some());
}
