//! Unit tests of what the contract suite cannot see: the purge task's lifetime, refreshes racing the
//! purge, the entry's size and the sharing of profiles.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sidekey_application::{Grant, Lookup, SessionStore};
use sidekey_domain::{Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Token};
use sidekey_test_support::ManualClock;

use super::InMemorySessionStore;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

/// A grant for `token`'s session (whose id the application derives from the token).
fn grant(token: &Token, ttl: u64, now: SystemTime) -> Grant {
    let policy = SessionPolicy::default();
    let session = Session::issue(
        SessionId::of_token(&token.digest()),
        SecretRef::parse("openai-prod").unwrap(),
        None,
        Metadata::default(),
        policy.ttl(Some(ttl)).unwrap(),
        now,
    );
    Grant { session, secret: Arc::new(SecretValue::new("sk-test".into()).unwrap()) }
}

// On tokio's paused clock: the sleep below lets the purge task run to its own sleep without waiting.
#[tokio::test(start_paused = true)]
async fn dropping_the_store_stops_its_purge_task_and_frees_its_sessions() {
    let clock = Arc::new(ManualClock::starting_at(at(0)));
    let (store, task) = InMemorySessionStore::start(clock.clone());
    let token = Token::generate().unwrap();
    let grant = grant(&token, 60, at(0));
    let secret = Arc::downgrade(&grant.secret);
    store.insert(&token.keys(), grant).await.unwrap();
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
async fn a_refreshed_session_is_not_purged_at_its_old_expiry() {
    let clock = Arc::new(ManualClock::starting_at(at(100)));
    let store = InMemorySessionStore::new(clock.clone());
    let token = Token::generate().unwrap();
    store.insert(&token.keys(), grant(&token, 60, at(50))).await.unwrap(); // due at 110
    store.extend(&token.keys(), at(200)).await.unwrap();
    assert_eq!(store.shared.purge(at(150)), 0);
    match store.find(&token.keys()).await.unwrap() {
        Lookup::Active(grant) => assert_eq!(grant.session.expires_at(), at(200)),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.shared.purge(at(200)), 0, "ended at its new expiry, remembered for the retention");
    assert!(matches!(store.find(&token.keys()).await.unwrap(), Lookup::Expired));
}

#[test]
fn a_table_slot_is_48_bytes() {
    // The per-session memory budget rests on it: a 16-byte key and a 32-byte entry per bucket.
    assert_eq!(std::mem::size_of::<super::Entry>(), 32);
    assert_eq!(std::mem::size_of::<(super::IdKey, super::Entry)>(), 48);
}

#[tokio::test]
async fn a_session_whose_id_is_not_its_tokens_is_refused() {
    let store = InMemorySessionStore::new(Arc::new(ManualClock::starting_at(at(0))));
    let (token, other) = (Token::generate().unwrap(), Token::generate().unwrap());
    let error = store.insert(&token.keys(), grant(&other, 60, at(0))).await.unwrap_err();
    assert!(matches!(error, sidekey_application::StoreError::Unavailable(_)), "{error:?}");
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_session_is_found_by_id_without_a_scan_or_an_index() {
    let store = InMemorySessionStore::new(Arc::new(ManualClock::starting_at(at(0))));
    let tokens: Vec<Token> = (0..3).map(|_| Token::generate().unwrap()).collect();
    for token in &tokens {
        store.insert(&token.keys(), grant(token, 60, at(0))).await.unwrap();
    }
    assert!(store.revoke_by_id(SessionId::of_token(&tokens[1].digest())).await.unwrap());
    assert!(matches!(store.find(&tokens[1].keys()).await.unwrap(), Lookup::Revoked));
    assert!(matches!(store.find(&tokens[0].keys()).await.unwrap(), Lookup::Active(_)));
    assert!(matches!(store.find(&tokens[2].keys()).await.unwrap(), Lookup::Active(_)));
}

#[tokio::test]
async fn sessions_of_one_key_and_subject_share_one_copy_of_the_real_key() {
    let store = InMemorySessionStore::new(Arc::new(ManualClock::starting_at(at(0))));
    let (first, second) = (Token::generate().unwrap(), Token::generate().unwrap());
    // Two fetches of the same key: equal values in different allocations.
    store.insert(&first.keys(), grant(&first, 60, at(0))).await.unwrap();
    store.insert(&second.keys(), grant(&second, 60, at(0))).await.unwrap();
    let secret_of = |lookup| match lookup {
        Lookup::Active(grant) => grant.secret,
        other => panic!("{other:?}"),
    };
    let a = secret_of(store.find(&first.keys()).await.unwrap());
    let b = secret_of(store.find(&second.keys()).await.unwrap());
    assert!(Arc::ptr_eq(&a, &b), "the second session kept its own copy of the key");

    // A different real key under the same name (a rotation) is not merged into the old one.
    let third = Token::generate().unwrap();
    let rotated = Grant {
        secret: Arc::new(SecretValue::new("sk-rotated".into()).unwrap()),
        ..grant(&third, 60, at(0))
    };
    store.insert(&third.keys(), rotated).await.unwrap();
    let c = secret_of(store.find(&third.keys()).await.unwrap());
    assert_eq!(c.expose(), "sk-rotated");
    assert_eq!(secret_of(store.find(&first.keys()).await.unwrap()).expose(), "sk-test");
}

#[tokio::test]
async fn a_session_past_its_expiry_but_not_yet_purged_is_no_longer_acted_on() {
    use sidekey_application::{RevocationTarget, SessionFilter};

    let store = InMemorySessionStore::new(Arc::new(ManualClock::starting_at(at(100))));
    let token = Token::generate().unwrap();
    let digest = token.digest();
    let grant = grant(&token, 60, at(0)); // expired at 60
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
