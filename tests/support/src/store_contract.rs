//! The `SessionStore` contract, as one suite run against every implementation: the memory store's tests
//! and the Redis store's (with and without its cache) instantiate it with [`store_contract_suite!`](crate::store_contract_suite!).
//!
//! Each test is written once, in [`contract`], against `Arc<dyn SessionStore>` and a [`ManualClock`];
//! [`store_contract_suite!`](crate::store_contract_suite!) instantiates the whole suite for one backend, with the instant its clock
//! starts at and a factory that builds the store on that clock (or `None` to skip, when the backend's
//! service is not there).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sidekey_application::{
    Clock, ENDED_SESSION_RETENTION, Grant, Lookup, RevocationTarget, SessionFilter, SessionStore, StoreError,
};
use sidekey_domain::{Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Subject, Token};

pub use crate::clock::ManualClock;

pub type Settle = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a backend's factory returns.
pub struct Backend {
    pub store: Arc<dyn SessionStore>,
    /// Brings the store up to date with the clock after the test moved it: whatever the store would
    /// eventually do by itself once that time had passed (the memory store purges).
    pub settle: Settle,
    /// Runs after the test, even when it failed: removes what the test left in a shared service.
    pub teardown: Option<Settle>,
}

/// One test's world: the store, its clock and a few session helpers.
pub struct Harness {
    clock: Arc<ManualClock>,
    store: Arc<dyn SessionStore>,
    settle: Settle,
    teardown: Option<Settle>,
}

impl Harness {
    /// A harness whose clock starts at `start`, on the backend `make` builds; `None` when the backend
    /// skipped (its service is not there, and the test may skip).
    pub async fn start<F, Fut>(start: SystemTime, make: F) -> Option<Self>
    where
        F: FnOnce(Arc<ManualClock>) -> Fut,
        Fut: Future<Output = Option<Backend>>,
    {
        let clock = Arc::new(ManualClock::starting_at(start));
        let Backend { store, settle, teardown } = make(Arc::clone(&clock)).await?;
        Some(Self { clock, store, settle, teardown })
    }

    /// Runs one contract test on this harness, then the backend's teardown (also when the test
    /// panicked, whose panic is then resumed).
    pub async fn run<F, Fut>(mut self, test: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let teardown = self.teardown.take();
        let outcome = tokio::spawn(test(self)).await;
        if let Some(teardown) = teardown {
            teardown().await;
        }
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn at(&self, seconds_from_now: u64) -> SystemTime {
        self.now() + Duration::from_secs(seconds_from_now)
    }

    /// Moves the clock and lets the store catch up.
    async fn advance(&self, seconds: u64) {
        self.clock.advance(Duration::from_secs(seconds));
        (self.settle)().await;
    }

    /// A grant of `token`'s session, issued now for `ttl` seconds, for `secret` (whose value is
    /// `sk-<secret>`) and `subject`.
    fn grant(&self, token: &Token, secret: &str, subject: Option<&str>, ttl: u64) -> Grant {
        let session = Session::issue(
            SessionId::of_token(&token.digest()),
            SecretRef::parse(secret).unwrap(),
            subject.map(|subject| Subject::parse(subject).unwrap()),
            Metadata::new([("team".to_owned(), "search".to_owned())].into()).unwrap(),
            SessionPolicy::default().ttl(Some(ttl)).unwrap(),
            self.now(),
        );
        let value = SecretValue::new(format!("sk-{secret}")).unwrap();
        Grant { session, secret: Arc::new(value) }
    }

    /// Stores a fresh session under a fresh token's token.
    async fn issue(&self, secret: &str, subject: Option<&str>, ttl: u64) -> (Token, Session) {
        let token = Token::generate().unwrap();
        let grant = self.grant(&token, secret, subject, ttl);
        let session = grant.session.clone();
        self.store.insert(&token.keys(), grant).await.unwrap();
        (token, session)
    }

    async fn find(&self, token: &Token) -> Lookup {
        self.store.find(&token.keys()).await.unwrap()
    }

    async fn active(&self, token: &Token) -> Grant {
        match self.find(token).await {
            Lookup::Active(grant) => grant,
            other => panic!("expected an active session, found {other:?}"),
        }
    }
}

fn is_revoked(lookup: &Lookup) -> bool {
    matches!(lookup, Lookup::Revoked)
}

fn is_missing(lookup: &Lookup) -> bool {
    matches!(lookup, Lookup::Missing)
}

fn is_expired(lookup: &Lookup) -> bool {
    matches!(lookup, Lookup::Expired)
}

/// The retention in whole seconds, for `Harness::advance`.
fn retention() -> u64 {
    ENDED_SESSION_RETENTION.as_secs()
}

fn ids(sessions: &[Session]) -> BTreeSet<SessionId> {
    sessions.iter().map(Session::id).collect()
}

/// Four sessions for the bulk operations: `openai` for alice and bob, `anthropic` for alice, and a
/// revoked `openai` session of alice's that no bulk operation may count again.
struct Fixture {
    openai_alice: (Token, Session),
    openai_bob: (Token, Session),
    anthropic_alice: (Token, Session),
    revoked_openai_alice: (Token, Session),
}

impl Fixture {
    async fn stored_in(harness: &Harness) -> Self {
        let fixture = Self {
            openai_alice: harness.issue("openai", Some("alice"), 600).await,
            openai_bob: harness.issue("openai", Some("bob"), 600).await,
            anthropic_alice: harness.issue("anthropic", Some("alice"), 600).await,
            revoked_openai_alice: harness.issue("openai", Some("alice"), 600).await,
        };
        assert!(harness.store.revoke(&fixture.revoked_openai_alice.0.digest()).await.unwrap());
        fixture
    }
}

/// The contract, one function per test; each takes a fresh harness.
pub mod contract {
    use super::*;

    pub async fn insert_then_find_returns_the_session_and_its_secret(h: Harness) {
        let token = Token::generate().unwrap();
        let grant = h.grant(&token, "openai-prod", Some("user_1"), 60);
        h.store.insert(&token.keys(), grant.clone()).await.unwrap();
        let found = h.active(&token).await;
        assert_eq!(found.session, grant.session);
        assert_eq!(found.session.expires_at(), h.at(60));
        assert_eq!(found.session.secret_ref().as_str(), "openai-prod");
        assert_eq!(found.session.subject().map(Subject::as_str), Some("user_1"));
        assert_eq!(found.session.metadata().entries().get("team").map(String::as_str), Some("search"));
        assert_eq!(found.secret.expose(), "sk-openai-prod");
    }

    pub async fn find_reports_a_digest_never_stored_as_missing(h: Harness) {
        h.issue("openai", None, 60).await;
        assert!(is_missing(&h.find(&Token::generate().unwrap()).await));
    }

    pub async fn insert_refuses_a_digest_already_stored_even_when_revoked(h: Harness) {
        let (token, original) = h.issue("openai", None, 60).await;
        let again = h.store.insert(&token.keys(), h.grant(&token, "other", None, 60)).await;
        assert_eq!(again.unwrap_err(), StoreError::Conflict);
        assert_eq!(h.active(&token).await.session, original, "a conflict must not overwrite");
        assert!(h.store.revoke(&token.digest()).await.unwrap());
        let after_revoke = h.store.insert(&token.keys(), h.grant(&token, "openai", None, 60)).await;
        assert_eq!(after_revoke.unwrap_err(), StoreError::Conflict);
        assert!(is_revoked(&h.find(&token).await));
    }

    pub async fn revoke_leaves_a_tombstone_and_reports_only_the_first_revocation(h: Harness) {
        let (token, _) = h.issue("openai", None, 60).await;
        let (other, _) = h.issue("openai", None, 60).await;
        assert!(h.store.revoke(&token.digest()).await.unwrap());
        assert!(is_revoked(&h.find(&token).await));
        assert!(!h.store.revoke(&token.digest()).await.unwrap());
        assert!(is_revoked(&h.find(&token).await));
        h.active(&other).await;
    }

    pub async fn revoke_of_a_digest_never_stored_returns_false(h: Harness) {
        let token = Token::generate().unwrap();
        assert!(!h.store.revoke(&token.digest()).await.unwrap());
        assert!(is_missing(&h.find(&token).await), "revoking nothing must not create a tombstone");
    }

    pub async fn revoke_by_id_revokes_once_and_ignores_unknown_ids(h: Harness) {
        let (token, session) = h.issue("openai", None, 60).await;
        let (other, _) = h.issue("openai", None, 60).await;
        assert!(!h.store.revoke_by_id(SessionId::new_random()).await.unwrap());
        assert!(h.store.revoke_by_id(session.id()).await.unwrap());
        assert!(is_revoked(&h.find(&token).await));
        assert!(!h.store.revoke_by_id(session.id()).await.unwrap());
        h.active(&other).await;
    }

    pub async fn revoke_matching_a_secret_ref_counts_exactly_its_active_sessions(h: Harness) {
        let f = Fixture::stored_in(&h).await;
        let target = RevocationTarget::SecretRef(SecretRef::parse("openai").unwrap());
        assert_eq!(h.store.revoke_matching(&target).await.unwrap(), 2);
        assert!(is_revoked(&h.find(&f.openai_alice.0).await));
        assert!(is_revoked(&h.find(&f.openai_bob.0).await));
        assert!(is_revoked(&h.find(&f.revoked_openai_alice.0).await));
        h.active(&f.anthropic_alice.0).await;
        assert_eq!(h.store.revoke_matching(&target).await.unwrap(), 0);
        let unknown = RevocationTarget::SecretRef(SecretRef::parse("mistral").unwrap());
        assert_eq!(h.store.revoke_matching(&unknown).await.unwrap(), 0);
    }

    pub async fn revoke_matching_a_subject_counts_exactly_its_active_sessions(h: Harness) {
        let f = Fixture::stored_in(&h).await;
        let anonymous = h.issue("openai", None, 600).await;
        let target = RevocationTarget::Subject(Subject::parse("alice").unwrap());
        assert_eq!(h.store.revoke_matching(&target).await.unwrap(), 2);
        assert!(is_revoked(&h.find(&f.openai_alice.0).await));
        assert!(is_revoked(&h.find(&f.anthropic_alice.0).await));
        h.active(&f.openai_bob.0).await;
        h.active(&anonymous.0).await;
        assert_eq!(h.store.revoke_matching(&target).await.unwrap(), 0);
    }

    pub async fn list_applies_each_filter_and_the_limit_and_skips_revoked_sessions(h: Harness) {
        let f = Fixture::stored_in(&h).await;
        let openai = Some(SecretRef::parse("openai").unwrap());
        let alice = Some(Subject::parse("alice").unwrap());
        let list = |secret_ref: Option<SecretRef>, subject: Option<Subject>, limit| {
            let store = Arc::clone(&h.store);
            async move { store.list(&SessionFilter { secret_ref, subject }, limit).await.unwrap() }
        };
        let all = [&f.openai_alice.1, &f.openai_bob.1, &f.anthropic_alice.1];
        let all_ids: BTreeSet<_> = all.iter().map(|s| s.id()).collect();

        let everything = list(None, None, 100).await;
        assert_eq!(ids(&everything), all_ids);
        assert_eq!(everything.len(), 3);
        let found = everything.iter().find(|s| s.id() == f.openai_bob.1.id()).unwrap();
        assert_eq!(found, &f.openai_bob.1, "listed sessions carry all their fields");

        let by_secret = list(openai.clone(), None, 100).await;
        assert_eq!(ids(&by_secret), BTreeSet::from([f.openai_alice.1.id(), f.openai_bob.1.id()]));
        let by_subject = list(None, alice.clone(), 100).await;
        assert_eq!(ids(&by_subject), BTreeSet::from([f.openai_alice.1.id(), f.anthropic_alice.1.id()]));
        let by_both = list(openai, alice, 100).await;
        assert_eq!(ids(&by_both), BTreeSet::from([f.openai_alice.1.id()]));

        let limited = list(None, None, 2).await;
        assert_eq!(limited.len(), 2);
        assert!(ids(&limited).is_subset(&all_ids));
        assert!(list(None, None, 0).await.is_empty());
        assert!(list(Some(SecretRef::parse("mistral").unwrap()), None, 100).await.is_empty());
    }

    pub async fn extend_moves_expires_at_and_keeps_everything_else(h: Harness) {
        let (token, session) = h.issue("openai", Some("alice"), 60).await;
        let Lookup::Active(extended) = h.store.extend(&token.keys(), h.at(90)).await.unwrap() else {
            panic!("extending an active session must return it");
        };
        assert_eq!(extended.session.expires_at(), h.at(90));
        assert_eq!(extended.secret.expose(), "sk-openai");
        let found = h.active(&token).await.session;
        assert_eq!(found.expires_at(), h.at(90));
        assert_eq!(found.id(), session.id());
        assert_eq!(found.issued_at(), session.issued_at());
        assert_eq!(found.ttl(), session.ttl());
        assert_eq!(found.subject(), session.subject());
        assert_eq!(found.metadata(), session.metadata());
    }

    pub async fn extend_never_resurrects_a_revoked_or_missing_session(h: Harness) {
        let (revoked, _) = h.issue("openai", None, 60).await;
        assert!(h.store.revoke(&revoked.digest()).await.unwrap());
        assert!(is_revoked(&h.store.extend(&revoked.keys(), h.at(600)).await.unwrap()));
        assert!(is_revoked(&h.find(&revoked).await));

        let never = Token::generate().unwrap();
        assert!(is_missing(&h.store.extend(&never.keys(), h.at(600)).await.unwrap()));
        assert!(is_missing(&h.find(&never).await));

        let (expired, _) = h.issue("openai", None, 60).await;
        h.advance(60).await;
        assert!(is_expired(&h.store.extend(&expired.keys(), h.at(600)).await.unwrap()));
        assert!(is_expired(&h.find(&expired).await));
        h.advance(retention()).await;
        assert!(is_missing(&h.store.extend(&expired.keys(), h.at(600)).await.unwrap()));
        assert!(is_missing(&h.find(&expired).await));
    }

    pub async fn an_expired_session_is_remembered_as_expired_then_forgotten(h: Harness) {
        let (token, session) = h.issue("openai", None, 60).await;
        let (longer, _) = h.issue("openai", None, 120).await;
        h.advance(59).await;
        h.active(&token).await;
        h.advance(1).await; // exactly expires_at: expired (the boundary is inclusive)
        assert!(is_expired(&h.find(&token).await));
        assert!(!h.store.revoke_by_id(session.id()).await.unwrap());
        assert!(!h.store.revoke(&token.digest()).await.unwrap());
        assert!(is_expired(&h.find(&token).await), "revoking an expired session changes nothing");
        h.active(&longer).await;
        h.advance(retention() - 1).await;
        assert!(is_expired(&h.find(&token).await));
        h.advance(1).await;
        assert!(is_missing(&h.find(&token).await));
    }

    pub async fn a_revocation_is_remembered_until_the_retention_after_the_original_expiry(h: Harness) {
        let (token, session) = h.issue("openai", None, 60).await;
        assert!(h.store.revoke(&token.digest()).await.unwrap());
        h.advance(60).await;
        assert!(is_revoked(&h.find(&token).await), "still revoked, not expired, at the original expiry");
        h.advance(retention() - 1).await;
        assert!(is_revoked(&h.find(&token).await));
        h.advance(1).await;
        assert!(is_missing(&h.find(&token).await));
        assert!(!h.store.revoke_by_id(session.id()).await.unwrap());
        assert!(!h.store.revoke(&token.digest()).await.unwrap());
    }

    pub async fn an_extended_session_outlives_its_original_expiry(h: Harness) {
        let (token, _) = h.issue("openai", None, 60).await;
        h.store.extend(&token.keys(), h.at(120)).await.unwrap();
        h.advance(60).await;
        assert_eq!(h.active(&token).await.session.expires_at(), h.now() + Duration::from_secs(60));
        h.advance(60).await;
        assert!(is_expired(&h.find(&token).await));
    }

    pub async fn ping_answers(h: Harness) {
        h.store.ping().await.unwrap();
    }
}

/// Expands each contract test into a `#[tokio::test]` that runs it on a fresh `harness()`.
#[doc(hidden)]
#[macro_export]
macro_rules! contract_tests {
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let Some(harness) = harness().await else { return };
                harness.run($crate::store_contract::contract::$test).await;
            }
        )*
    };
}

/// The whole suite for one backend:
/// `store_contract_suite!(name, start_instant, |clock| async move { Some(Backend { .. }) })`.
/// The whole contract suite as a module `$backend` of `#[tokio::test]`s, over the store `$factory` builds
/// on a [`ManualClock`] starting at `$start` (`None` from the factory: skip, the service is missing).
#[macro_export]
macro_rules! store_contract_suite {
    ($backend:ident, $start:expr, $factory:expr) => {
        mod $backend {
            use super::*;

            async fn harness() -> Option<$crate::store_contract::Harness> {
                $crate::store_contract::Harness::start($start, $factory).await
            }

            $crate::contract_tests!(
                insert_then_find_returns_the_session_and_its_secret,
                find_reports_a_digest_never_stored_as_missing,
                insert_refuses_a_digest_already_stored_even_when_revoked,
                revoke_leaves_a_tombstone_and_reports_only_the_first_revocation,
                revoke_of_a_digest_never_stored_returns_false,
                revoke_by_id_revokes_once_and_ignores_unknown_ids,
                revoke_matching_a_secret_ref_counts_exactly_its_active_sessions,
                revoke_matching_a_subject_counts_exactly_its_active_sessions,
                list_applies_each_filter_and_the_limit_and_skips_revoked_sessions,
                extend_moves_expires_at_and_keeps_everything_else,
                extend_never_resurrects_a_revoked_or_missing_session,
                an_expired_session_is_remembered_as_expired_then_forgotten,
                a_revocation_is_remembered_until_the_retention_after_the_original_expiry,
                an_extended_session_outlives_its_original_expiry,
                ping_answers,
            );
        }
    };
}
