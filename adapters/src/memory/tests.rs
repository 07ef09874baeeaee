//! Unit tests of what the contract suite cannot see: the purge task's lifetime and the index's
//! tolerance of stale deadlines.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sidekey_application::{Clock, Grant, Lookup, SessionStore};
use sidekey_domain::{Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Token};

use super::InMemorySessionStore;

struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

fn grant(ttl: u64, now: SystemTime) -> Grant {
    let policy = SessionPolicy::default();
    let session = Session::issue(
        SessionId::new_random(),
        SecretRef::parse("openai-prod").unwrap(),
        None,
        Metadata::default(),
        policy.ttl(Some(ttl)).unwrap(),
        now,
    );
    Grant { session, secret: Arc::new(SecretValue::new("sk-test".into()).unwrap()) }
}

#[tokio::test]
async fn dropping_the_store_stops_its_purge_task_and_frees_its_sessions() {
    let clock = Arc::new(FixedClock(at(0)));
    let (store, task) = InMemorySessionStore::start(clock.clone());
    let grant = grant(60, at(0));
    let secret = Arc::downgrade(&grant.secret);
    store.insert(&Token::generate().unwrap().keys(), grant).await.unwrap();
    // Let the task reach its sleep, so the test covers a drop while it waits.
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(store);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the purge task outlived its store")
        .unwrap();
    assert!(secret.upgrade().is_none(), "a dropped store kept a real key alive");
    assert_eq!(Arc::strong_count(&clock), 1);
}

#[tokio::test]
async fn a_stale_deadline_left_by_a_refresh_does_not_purge_the_session() {
    let clock = Arc::new(FixedClock(at(100)));
    let store = InMemorySessionStore::new(clock.clone());
    let token = Token::generate().unwrap();
    let digest = token.digest();
    store.insert(&token.keys(), grant(60, at(50))).await.unwrap(); // due at 110
    // Put a stale deadline on the schedule, as a purge racing a refresh can leave behind.
    store.shared.deadlines().insert((at(90), digest));
    assert_eq!(store.purge_expired(), 0);
    assert!(matches!(store.find(&token.keys()).await.unwrap(), Lookup::Active(_)));
    assert_eq!(store.shared.deadlines().len(), 1, "the stale deadline stays on the schedule");
}

#[tokio::test]
async fn extend_replaces_the_scheduled_deadline() {
    let clock = Arc::new(FixedClock(at(0)));
    let store = InMemorySessionStore::new(clock);
    let token = Token::generate().unwrap();
    let digest = token.digest();
    store.insert(&token.keys(), grant(60, at(0))).await.unwrap();
    store.extend(&token.keys(), at(90)).await.unwrap();
    let deadlines: Vec<_> = store.shared.deadlines().iter().copied().collect();
    assert_eq!(deadlines, vec![(at(90), digest)]);
}

#[tokio::test]
async fn a_session_past_its_expiry_but_not_yet_purged_is_no_longer_acted_on() {
    use sidekey_application::{RevocationTarget, SessionFilter};

    let store = InMemorySessionStore::new(Arc::new(FixedClock(at(100))));
    let token = Token::generate().unwrap();
    let digest = token.digest();
    let grant = grant(60, at(0)); // expired at 60
    let id = grant.session.id();
    store.insert(&token.keys(), grant).await.unwrap();
    // The port allows `find` to return it (callers check expiry), and it costs `find` nothing.
    assert!(matches!(store.find(&token.keys()).await.unwrap(), Lookup::Active(_)));
    // Everything else treats it as gone, as a backend with native expiry would.
    assert!(matches!(store.extend(&token.keys(), at(200)).await.unwrap(), Lookup::Expired));
    assert!(!store.revoke(&digest).await.unwrap());
    assert!(!store.revoke_by_id(id).await.unwrap());
    let target = RevocationTarget::SecretRef(SecretRef::parse("openai-prod").unwrap());
    assert_eq!(store.revoke_matching(&target).await.unwrap(), 0);
    assert!(store.list(&SessionFilter::default(), 10).await.unwrap().is_empty());
    // The purge ends it (the real key goes) but remembers it as expired for the retention period.
    assert_eq!(store.purge_expired(), 0);
    assert!(matches!(store.find(&token.keys()).await.unwrap(), Lookup::Expired));
    assert_eq!(store.len(), 1);
}
