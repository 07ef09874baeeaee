//! Unit tests of [`SessionService`] over mockall mocks of the ports, at fixed instants.
//!
//! Each test builds the mocks it needs; a port the operation must not reach is either given `.never()`
//! (where that is the point of the test) or left without expectations, which mockall also refuses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sidekey_domain::{
    CallerSession, Limits, Metadata, Scope, SecretRef, SecretValue, Session, SessionId, SessionParts,
    SessionPolicy, Subject, Token, TokenDigest, TokenParseError, TtlError,
};

use super::{AdminError, IssueError, IssueRequest, Rejection, SessionService, VerifyError};
use crate::ports::{
    Grant, Lookup, MockClock, MockSecretSource, MockSessionStore, RevocationTarget, SecretSourceError,
    SessionFilter, StoreError,
};

/// 2027-01-15T08:00:00Z: every test runs at a fixed offset from it, never on the real clock.
const T0: Duration = Duration::from_secs(1_800_000_000);
/// The name of the real key the tests' sessions stand for.
const SECRET_NAME: &str = "openai-prod";
/// The real key itself: text that must never show up in a `Debug` output.
const SECRET_TEXT: &str = "sk-live-4f1c9a77e0b2d83e";
/// `SessionPolicy::DEFAULT`'s TTL, in seconds (the contract's one hour).
const DEFAULT_TTL: u64 = 3600;
/// `SessionPolicy::DEFAULT`'s maximum lifetime and largest TTL, in seconds (the contract's one day).
const ONE_DAY: u64 = 86_400;
/// The cause every failing store mock gives.
const STORE_DOWN: &str = "connection refused";

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
}

fn secret_ref() -> SecretRef {
    SecretRef::parse(SECRET_NAME).unwrap()
}

fn secret() -> SecretValue {
    SecretValue::new(SECRET_TEXT.into()).unwrap()
}

fn subject() -> Subject {
    Subject::parse("user_123").unwrap()
}

fn metadata() -> Metadata {
    Metadata::new(BTreeMap::from([("team".to_owned(), "search".to_owned())])).unwrap()
}

/// The token clients present in these tests (deterministic, so its digest is known in advance).
fn token() -> Token {
    Token::from_random_bytes(&[7; 32])
}

fn presented() -> String {
    token().expose().to_owned()
}

fn digest() -> TokenDigest {
    token().digest()
}

/// A session issued at `at(issued)` for `ttl` seconds, never refreshed.
fn session(issued: u64, ttl: u64) -> Session {
    session_until(issued, ttl, issued + ttl)
}

/// A session issued at `at(issued)` for `ttl` seconds whose refreshes have carried it to `at(expires)`.
fn session_until(issued: u64, ttl: u64, expires: u64) -> Session {
    Session::from_parts(SessionParts {
        id: SessionId::new_random(),
        secret_ref: secret_ref(),
        subject: Some(subject()),
        issued_at: at(issued),
        expires_at: at(expires),
        ttl: Duration::from_secs(ttl),
        metadata: metadata(),
        caller_session: None,
        scope: Scope::default(),
        limits: Limits::default(),
    })
    .unwrap()
}

fn with_expiry(session: &Session, expires_at: SystemTime) -> Session {
    Session::from_parts(SessionParts { expires_at, ..session.to_parts() }).unwrap()
}

fn grant(session: Session) -> Grant {
    Grant { session, secret: Arc::new(secret()) }
}

fn request(ttl_seconds: Option<u64>) -> IssueRequest {
    IssueRequest {
        secret_ref: secret_ref(),
        ttl_seconds,
        metadata: metadata(),
        subject: Some(subject()),
        caller_session: None,
        scope: Scope::default(),
        limits: Limits::default(),
    }
}

fn clock_at(now: SystemTime) -> MockClock {
    let mut clock = MockClock::new();
    clock.expect_now().return_const(now);
    clock
}

fn unavailable() -> StoreError {
    StoreError::Unavailable(STORE_DOWN.into())
}

/// A secret source that answers one fetch of [`SECRET_NAME`] with `answer`.
fn secrets_answering(
    answer: impl Fn() -> Result<SecretValue, SecretSourceError> + Send + 'static,
) -> MockSecretSource {
    let mut secrets = MockSecretSource::new();
    secrets.expect_fetch().withf(|name| name.as_str() == SECRET_NAME).times(1).returning(move |_| answer());
    secrets
}

/// A secret source that must not be asked anything.
fn untouched_secrets() -> MockSecretSource {
    let mut secrets = MockSecretSource::new();
    secrets.expect_fetch().never();
    secrets.expect_ping().never();
    secrets
}

/// A store that answers one `find` of the test token's digest with `lookup`.
fn store_finding(lookup: Lookup) -> MockSessionStore {
    let mut store = MockSessionStore::new();
    let expected = digest();
    store
        .expect_find()
        .withf(move |keys| *keys.digest() == expected)
        .times(1)
        .return_once(move |_| Ok(lookup));
    store
}

/// A store that must not be asked anything.
fn untouched_store() -> MockSessionStore {
    let mut store = MockSessionStore::new();
    store.expect_insert().never();
    store.expect_find().never();
    store.expect_extend().never();
    store.expect_revoke().never();
    store
}

fn service_of(store: MockSessionStore, secrets: MockSecretSource, clock: MockClock) -> SessionService {
    SessionService::new(Arc::new(store), Arc::new(secrets), Arc::new(clock), SessionPolicy::DEFAULT)
}

/// A service that only touches the store, at `at(now)`.
fn store_service(store: MockSessionStore, now: SystemTime) -> SessionService {
    service_of(store, MockSecretSource::new(), clock_at(now))
}

/// Whether `error` is a store failure that kept the store's cause for the log.
fn is_store_unavailable(error: &VerifyError) -> bool {
    matches!(error, VerifyError::StoreUnavailable(cause) if cause.contains(STORE_DOWN))
}

fn is_admin_store_unavailable(error: &AdminError) -> bool {
    matches!(error, AdminError::StoreUnavailable(cause) if cause.contains(STORE_DOWN))
}

/// Texts that are not tokens, one for each rule of `Token::parse`, with the rule each breaks.
fn malformed_tokens() -> Vec<(String, TokenParseError)> {
    let text = presented();
    let mut foreign = text.clone();
    foreign.replace_range(10..11, "-");
    let mut flipped = text.clone();
    flipped.replace_range(10..11, if &text[10..11] == "a" { "b" } else { "a" });
    vec![
        ("Bearer abc".to_owned(), TokenParseError::WrongPrefix),
        (text.replacen("skt_", "skx_", 1), TokenParseError::WrongPrefix),
        (text[..text.len() - 1].to_owned(), TokenParseError::WrongLength),
        (format!("{text}0"), TokenParseError::WrongLength),
        (foreign, TokenParseError::InvalidCharacter),
        (flipped, TokenParseError::ChecksumMismatch),
    ]
}

// ---------------------------------------------------------------------------------------------- issue

#[tokio::test]
async fn issue_stores_the_session_under_the_digest_of_the_token_it_returns() {
    let now = at(0);
    let inserted: Arc<Mutex<Option<(TokenDigest, Grant)>>> = Arc::default();
    let slot = Arc::clone(&inserted);
    let mut store = MockSessionStore::new();
    store.expect_insert().times(1).returning(move |keys, grant| {
        *slot.lock().unwrap() = Some((*keys.digest(), grant));
        Ok(())
    });
    let service = service_of(store, secrets_answering(|| Ok(secret())), clock_at(now));

    let issued = service.issue(request(None)).await.unwrap();

    let parsed = Token::parse(issued.token.expose()).expect("the issued token parses");
    let (digest, grant) = inserted.lock().unwrap().take().expect("the session was inserted");
    assert_eq!(digest, issued.token.digest());
    assert_eq!(digest, parsed.digest());
    assert_eq!(grant.session, issued.session);
    assert_eq!(grant.secret.expose(), SECRET_TEXT);
    let session = &issued.session;
    assert_eq!(session.secret_ref(), &secret_ref());
    assert_eq!(session.subject(), Some(&subject()));
    assert_eq!(session.metadata(), &metadata());
    assert_eq!(session.issued_at(), now);
    assert_eq!(session.ttl(), Duration::from_secs(DEFAULT_TTL));
    assert_eq!(session.expires_at(), at(DEFAULT_TTL));
    assert_eq!(session.id(), SessionId::of_token(&digest), "the id is derived from the token");
    assert_eq!(session.id().shard(), digest.shard(), "the id carries the digest's shard");
}

#[tokio::test]
async fn issue_grants_the_requested_ttl_and_carries_no_subject_when_the_caller_had_none() {
    let now = at(50);
    let mut store = MockSessionStore::new();
    store
        .expect_insert()
        .withf(move |_, grant| {
            grant.session.expires_at() == at(50 + 120) && grant.session.subject().is_none()
        })
        .times(1)
        .returning(|_, _| Ok(()));
    let service = service_of(store, secrets_answering(|| Ok(secret())), clock_at(now));
    let request = IssueRequest { subject: None, metadata: Metadata::default(), ..request(Some(120)) };

    let issued = service.issue(request).await.unwrap();

    assert_eq!(issued.session.ttl(), Duration::from_secs(120));
    assert_eq!(issued.session.issued_at(), now);
    assert_eq!(issued.session.expires_at(), at(50 + 120));
    assert_eq!(issued.session.subject(), None);
    assert!(issued.session.metadata().is_empty());
}

#[tokio::test]
async fn issue_accepts_the_largest_ttl_the_policy_allows() {
    let mut store = MockSessionStore::new();
    store.expect_insert().times(1).returning(|_, _| Ok(()));
    let service = service_of(store, secrets_answering(|| Ok(secret())), clock_at(at(0)));

    let issued = service.issue(request(Some(ONE_DAY))).await.unwrap();

    assert_eq!(issued.session.expires_at(), at(ONE_DAY));
}

#[tokio::test]
async fn issue_refuses_a_ttl_out_of_bounds_without_asking_the_secret_source_or_the_store() {
    let mut clock = MockClock::new();
    clock.expect_now().never();
    let service = service_of(untouched_store(), untouched_secrets(), clock);

    for requested in [0, ONE_DAY + 1, u64::MAX] {
        let error = service.issue(request(Some(requested))).await.unwrap_err();

        let expected = TtlError { requested, min: 1, max: ONE_DAY };
        assert!(matches!(&error, IssueError::InvalidTtl(refused) if *refused == expected), "{error:?}");
    }
}

#[tokio::test]
async fn issue_reports_an_unknown_secret_and_stores_nothing() {
    let mut store = MockSessionStore::new();
    store.expect_insert().never();
    let service = service_of(store, secrets_answering(|| Err(SecretSourceError::NotFound)), clock_at(at(0)));

    let error = service.issue(request(None)).await.unwrap_err();

    assert!(matches!(error, IssueError::UnknownSecret), "{error:?}");
}

#[tokio::test]
async fn issue_reports_a_secret_source_timeout_and_stores_nothing() {
    let mut store = MockSessionStore::new();
    store.expect_insert().never();
    let secrets = secrets_answering(|| Err(SecretSourceError::Timeout(Duration::from_secs(2))));
    let service = service_of(store, secrets, clock_at(at(0)));

    let error = service.issue(request(None)).await.unwrap_err();

    assert!(matches!(error, IssueError::SecretSourceTimeout), "{error:?}");
}

#[tokio::test]
async fn issue_reports_a_secret_source_failure_with_its_cause_and_stores_nothing() {
    let mut store = MockSessionStore::new();
    store.expect_insert().never();
    let secrets = secrets_answering(|| Err(SecretSourceError::Failed("bus closed".into())));
    let service = service_of(store, secrets, clock_at(at(0)));

    let error = service.issue(request(None)).await.unwrap_err();

    assert!(matches!(&error, IssueError::SecretSourceFailed(cause) if cause == "bus closed"), "{error:?}");
}

#[tokio::test]
async fn issue_reports_an_unavailable_secret_source_as_transient_and_stores_nothing() {
    let mut store = MockSessionStore::new();
    store.expect_insert().never();
    let secrets = secrets_answering(|| Err(SecretSourceError::Unavailable("bus down".into())));
    let service = service_of(store, secrets, clock_at(at(0)));

    let error = service.issue(request(None)).await.unwrap_err();

    assert!(matches!(&error, IssueError::SecretSourceUnavailable(cause) if cause == "bus down"), "{error:?}");
}

#[tokio::test]
async fn issue_reports_an_unavailable_store_with_its_cause() {
    let mut store = MockSessionStore::new();
    store.expect_insert().times(1).returning(|_, _| Err(unavailable()));
    let service = service_of(store, secrets_answering(|| Ok(secret())), clock_at(at(0)));

    let error = service.issue(request(None)).await.unwrap_err();

    assert!(matches!(&error, IssueError::StoreUnavailable(cause) if cause == STORE_DOWN), "{error:?}");
}

#[tokio::test]
async fn issue_treats_a_digest_collision_as_a_store_failure() {
    let mut store = MockSessionStore::new();
    store.expect_insert().times(1).returning(|_, _| Err(StoreError::Conflict));
    let service = service_of(store, secrets_answering(|| Ok(secret())), clock_at(at(0)));

    let error = service.issue(request(None)).await.unwrap_err();

    assert!(
        matches!(&error, IssueError::StoreUnavailable(cause) if cause == "token digest collision"),
        "{error:?}"
    );
}

// --------------------------------------------------------------------------------------------- verify

#[tokio::test]
async fn verify_grants_the_session_and_the_secret_of_a_valid_token() {
    let session = session(0, DEFAULT_TTL);
    let service = store_service(store_finding(Lookup::Active(grant(session.clone()))), at(100));

    let granted = service.verify(&presented()).await.unwrap();

    assert_eq!(granted.session, session);
    assert_eq!(granted.secret.expose(), SECRET_TEXT);
}

#[tokio::test]
async fn verify_refuses_a_malformed_token_without_asking_the_store() {
    let mut clock = MockClock::new();
    clock.expect_now().never();
    let service = service_of(untouched_store(), untouched_secrets(), clock);

    for (text, broken_rule) in malformed_tokens() {
        let error = service.verify(&text).await.unwrap_err();

        assert_eq!(error, VerifyError::Rejected(Rejection::Malformed(broken_rule)), "{text:?}");
    }
}

#[tokio::test]
async fn verify_rejects_a_well_formed_token_the_store_does_not_know() {
    let service = store_service(store_finding(Lookup::Missing), at(100));

    let error = service.verify(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Unknown));
}

#[tokio::test]
async fn verify_rejects_a_revoked_token() {
    let service = store_service(store_finding(Lookup::Revoked), at(100));

    let error = service.verify(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Revoked));
}

#[tokio::test]
async fn verify_rejects_a_token_the_store_remembers_as_expired() {
    let service = store_service(store_finding(Lookup::Expired), at(100));

    let error = service.verify(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Expired));
}

#[tokio::test]
async fn verify_rejects_a_token_whose_session_expired_at_exactly_the_boundary() {
    let session = session(0, DEFAULT_TTL);
    let service = store_service(store_finding(Lookup::Active(grant(session))), at(DEFAULT_TTL));

    let error = service.verify(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Expired));
}

#[tokio::test]
async fn verify_accepts_a_token_one_nanosecond_before_its_session_expires() {
    let session = session(0, DEFAULT_TTL);
    let just_before = at(DEFAULT_TTL) - Duration::from_nanos(1);
    let service = store_service(store_finding(Lookup::Active(grant(session.clone()))), just_before);

    let granted = service.verify(&presented()).await.unwrap();

    assert_eq!(granted.session, session);
}

#[tokio::test]
async fn verify_fails_closed_when_the_store_is_unavailable() {
    let mut store = MockSessionStore::new();
    store.expect_find().times(1).returning(|_| Err(unavailable()));
    let service = store_service(store, at(100));

    let error = service.verify(&presented()).await.unwrap_err();

    assert!(is_store_unavailable(&error), "{error:?}");
}

// -------------------------------------------------------------------------------------------- refresh

/// A store that answers `find` with `session` and `extend` by echoing the new expiry it was given, after
/// checking it is `expected_expiry`.
fn store_extending(session: Session, expected_expiry: SystemTime) -> MockSessionStore {
    let mut store = store_finding(Lookup::Active(grant(session.clone())));
    let expected = digest();
    store
        .expect_extend()
        .withf(move |keys, expires_at| *keys.digest() == expected && *expires_at == expected_expiry)
        .times(1)
        .returning(move |_, expires_at| Ok(Lookup::Active(grant(with_expiry(&session, expires_at)))));
    store
}

#[tokio::test]
async fn refresh_slides_the_expiry_to_now_plus_the_ttl() {
    let session = session(0, DEFAULT_TTL);
    let service = store_service(store_extending(session.clone(), at(1000 + DEFAULT_TTL)), at(1000));

    let refreshed = service.refresh(&presented()).await.unwrap();

    assert_eq!(refreshed.expires_at(), at(1000 + DEFAULT_TTL));
    assert_eq!(refreshed.id(), session.id());
    assert_eq!(refreshed.issued_at(), at(0));
}

#[tokio::test]
async fn refresh_past_the_maximum_lifetime_is_capped_not_refused() {
    // Refreshed up to an hour and a bit before its one-day cap, then refreshed again.
    let session = session_until(0, DEFAULT_TTL, ONE_DAY - 1000);
    let now = at(ONE_DAY - 2000);
    let service = store_service(store_extending(session, at(ONE_DAY)), now);

    let refreshed = service.refresh(&presented()).await.unwrap();

    assert_eq!(refreshed.expires_at(), at(ONE_DAY));
}

#[tokio::test]
async fn refresh_of_a_session_already_at_its_maximum_lifetime_returns_it_unchanged() {
    let session = session_until(0, DEFAULT_TTL, ONE_DAY);
    let service = store_service(store_extending(session, at(ONE_DAY)), at(ONE_DAY - 10));

    let refreshed = service.refresh(&presented()).await.unwrap();

    assert_eq!(refreshed.expires_at(), at(ONE_DAY));
}

#[tokio::test]
async fn refresh_rejects_a_token_whose_session_expired_without_extending_it() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    store.expect_extend().never();
    let service = store_service(store, at(DEFAULT_TTL));

    let error = service.refresh(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Expired));
}

#[tokio::test]
async fn refresh_rejects_a_revoked_token_without_extending_it() {
    let mut store = store_finding(Lookup::Revoked);
    store.expect_extend().never();
    let service = store_service(store, at(100));

    let error = service.refresh(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Revoked));
}

#[tokio::test]
async fn refresh_rejects_a_token_revoked_between_the_lookup_and_the_update() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    store.expect_extend().times(1).returning(|_, _| Ok(Lookup::Revoked));
    let service = store_service(store, at(100));

    let error = service.refresh(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Revoked));
}

#[tokio::test]
async fn refresh_rejects_a_token_purged_between_the_lookup_and_the_update() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    store.expect_extend().times(1).returning(|_, _| Ok(Lookup::Missing));
    let service = store_service(store, at(100));

    let error = service.refresh(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Unknown));
}

#[tokio::test]
async fn refresh_refuses_a_malformed_token_without_asking_the_store() {
    let service = store_service(untouched_store(), at(100));

    let error = service.refresh("skt_short").await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Malformed(TokenParseError::WrongLength)));
}

#[tokio::test]
async fn refresh_fails_closed_when_the_store_is_unavailable_for_the_lookup() {
    let mut store = MockSessionStore::new();
    store.expect_find().times(1).returning(|_| Err(unavailable()));
    store.expect_extend().never();
    let service = store_service(store, at(100));

    let error = service.refresh(&presented()).await.unwrap_err();

    assert!(is_store_unavailable(&error), "{error:?}");
}

#[tokio::test]
async fn refresh_fails_closed_when_the_store_is_unavailable_for_the_update() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    store.expect_extend().times(1).returning(|_, _| Err(unavailable()));
    let service = store_service(store, at(100));

    let error = service.refresh(&presented()).await.unwrap_err();

    assert!(is_store_unavailable(&error), "{error:?}");
}

// --------------------------------------------------------------------------------------------- revoke

#[tokio::test]
async fn revoke_ends_the_session_of_a_valid_token() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    let expected = digest();
    store.expect_revoke().withf(move |digest| *digest == expected).times(1).returning(|_| Ok(true));
    let service = store_service(store, at(100));

    assert_eq!(service.revoke(&presented()).await, Ok(()));
}

#[tokio::test]
async fn revoke_rejects_a_token_whose_session_someone_else_ended_in_between() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    store.expect_revoke().times(1).returning(|_| Ok(false));
    let service = store_service(store, at(100));

    let error = service.revoke(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Revoked));
}

#[tokio::test]
async fn revoke_rejects_an_unknown_token_without_revoking_anything() {
    let mut store = store_finding(Lookup::Missing);
    store.expect_revoke().never();
    let service = store_service(store, at(100));

    let error = service.revoke(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Unknown));
}

#[tokio::test]
async fn revoke_rejects_an_expired_token_without_revoking_anything() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    store.expect_revoke().never();
    let service = store_service(store, at(DEFAULT_TTL + 1));

    let error = service.revoke(&presented()).await.unwrap_err();

    assert_eq!(error, VerifyError::Rejected(Rejection::Expired));
}

#[tokio::test]
async fn revoke_refuses_a_malformed_token_without_asking_the_store() {
    let service = store_service(untouched_store(), at(100));

    for (text, broken_rule) in malformed_tokens() {
        let error = service.revoke(&text).await.unwrap_err();

        assert_eq!(error, VerifyError::Rejected(Rejection::Malformed(broken_rule)), "{text:?}");
    }
}

#[tokio::test]
async fn revoke_fails_closed_when_the_store_is_unavailable_for_the_lookup() {
    let mut store = MockSessionStore::new();
    store.expect_find().times(1).returning(|_| Err(unavailable()));
    store.expect_revoke().never();
    let service = store_service(store, at(100));

    let error = service.revoke(&presented()).await.unwrap_err();

    assert!(is_store_unavailable(&error), "{error:?}");
}

#[tokio::test]
async fn revoke_fails_closed_when_the_store_is_unavailable_for_the_revocation() {
    let mut store = store_finding(Lookup::Active(grant(session(0, DEFAULT_TTL))));
    store.expect_revoke().times(1).returning(|_| Err(unavailable()));
    let service = store_service(store, at(100));

    let error = service.revoke(&presented()).await.unwrap_err();

    assert!(is_store_unavailable(&error), "{error:?}");
}

// ---------------------------------------------------------------------------------------------- admin

#[tokio::test]
async fn list_passes_filter_and_limit_and_drops_the_expired_sessions_the_store_returned() {
    let live = session(0, 2 * DEFAULT_TTL);
    let at_the_boundary = session(0, DEFAULT_TTL);
    let long_gone = session(0, 60);
    let filter = SessionFilter { secret_ref: Some(secret_ref()), subject: Some(subject()) };
    let expected_filter = filter.clone();
    let returned = vec![at_the_boundary, live.clone(), long_gone];
    let mut store = MockSessionStore::new();
    store
        .expect_list()
        .withf(move |filter, limit| *filter == expected_filter && *limit == 50)
        .times(1)
        .return_once(move |_, _| Ok(returned));
    let service = store_service(store, at(DEFAULT_TTL));

    let listed = service.list(&filter, 50).await.unwrap();

    assert_eq!(listed, vec![live]);
}

#[tokio::test]
async fn list_reports_an_unavailable_store() {
    let mut store = MockSessionStore::new();
    store.expect_list().times(1).returning(|_, _| Err(unavailable()));
    let service = store_service(store, at(0));

    let error = service.list(&SessionFilter::default(), 10).await.unwrap_err();

    assert!(is_admin_store_unavailable(&error), "{error:?}");
}

#[tokio::test]
async fn revoke_by_id_succeeds_when_the_store_revoked_an_active_session() {
    let id = SessionId::new_random();
    let mut store = MockSessionStore::new();
    store.expect_revoke_by_id().withf(move |asked| *asked == id).times(1).returning(|_| Ok(true));
    let service = store_service(store, at(0));

    assert_eq!(service.revoke_by_id(id).await, Ok(()));
}

#[tokio::test]
async fn revoke_by_id_reports_not_found_when_no_active_session_has_the_id() {
    let mut store = MockSessionStore::new();
    store.expect_revoke_by_id().times(1).returning(|_| Ok(false));
    let service = store_service(store, at(0));

    assert_eq!(service.revoke_by_id(SessionId::new_random()).await, Err(AdminError::NotFound));
}

#[tokio::test]
async fn revoke_by_id_reports_an_unavailable_store() {
    let mut store = MockSessionStore::new();
    store.expect_revoke_by_id().times(1).returning(|_| Err(unavailable()));
    let service = store_service(store, at(0));

    let error = service.revoke_by_id(SessionId::new_random()).await.unwrap_err();

    assert!(is_admin_store_unavailable(&error), "{error:?}");
}

#[tokio::test]
async fn revoke_matching_returns_how_many_sessions_the_store_revoked() {
    let by_key = RevocationTarget::SecretRef(secret_ref());
    let by_subject = RevocationTarget::Subject(subject());
    let mut store = MockSessionStore::new();
    let expected = by_key.clone();
    store.expect_revoke_matching().withf(move |target| *target == expected).times(1).returning(|_| Ok(3));
    let expected = by_subject.clone();
    store.expect_revoke_matching().withf(move |target| *target == expected).times(1).returning(|_| Ok(0));
    let service = store_service(store, at(0));

    assert_eq!(service.revoke_matching(&by_key).await, Ok(3));
    assert_eq!(service.revoke_matching(&by_subject).await, Ok(0));
}

#[tokio::test]
async fn a_rotated_key_revokes_every_session_bound_to_it() {
    let expected = RevocationTarget::SecretRef(secret_ref());
    let mut store = MockSessionStore::new();
    store.expect_revoke_matching().withf(move |target| *target == expected).times(1).returning(|_| Ok(2));
    let service = store_service(store, at(0));

    assert_eq!(service.revoke_rotated(&secret_ref()).await, Ok(2));
}

#[tokio::test]
async fn revoke_matching_reports_an_unavailable_store() {
    let mut store = MockSessionStore::new();
    store.expect_revoke_matching().times(1).returning(|_| Err(unavailable()));
    let service = store_service(store, at(0));

    let error = service.revoke_matching(&RevocationTarget::Subject(subject())).await.unwrap_err();

    assert!(is_admin_store_unavailable(&error), "{error:?}");
}

// ------------------------------------------------------------------------------------------ readiness

#[tokio::test]
async fn readiness_is_ready_only_when_both_the_store_and_the_secret_source_answer() {
    let cases = [
        (Ok(()), Ok(()), true),
        (Err(unavailable()), Ok(()), false),
        (Ok(()), Err(SecretSourceError::Timeout(Duration::from_secs(1))), false),
        (Err(unavailable()), Err(SecretSourceError::Failed("bus closed".into())), false),
    ];
    for (store_answer, secrets_answer, ready) in cases {
        let mut store = MockSessionStore::new();
        let answer = store_answer.clone();
        store.expect_ping().times(1).return_once(move || answer);
        let mut secrets = MockSecretSource::new();
        let answer = secrets_answer.clone();
        secrets.expect_ping().times(1).return_once(move || answer);
        let service = service_of(store, secrets, clock_at(at(0)));

        let readiness = service.readiness().await;

        assert_eq!(readiness.store, store_answer);
        assert_eq!(readiness.secrets, secrets_answer);
        assert_eq!(readiness.is_ready(), ready, "{readiness:?}");
    }
}

// ------------------------------------------------------------------------------------------- secrecy

#[tokio::test]
async fn debug_output_of_issued_and_of_errors_never_shows_the_token_or_the_secret() {
    let mut store = MockSessionStore::new();
    store.expect_insert().times(1).returning(|_, _| Ok(()));
    let service = service_of(store, secrets_answering(|| Ok(secret())), clock_at(at(0)));
    let issued = service.issue(request(None)).await.unwrap();
    let issued_text = issued.token.expose().to_owned();

    let mut failing_store = MockSessionStore::new();
    failing_store.expect_insert().times(1).returning(|_, _| Err(unavailable()));
    let failing = service_of(failing_store, secrets_answering(|| Ok(secret())), clock_at(at(0)));
    let issue_errors = [
        failing.issue(request(None)).await.unwrap_err(),
        IssueError::SecretSourceFailed("bus closed".into()),
        IssueError::UnknownSecret,
    ];
    let malformed = malformed_tokens().pop().unwrap().0;
    let verify_errors = [
        store_service(untouched_store(), at(0)).verify(&malformed).await.unwrap_err(),
        VerifyError::StoreUnavailable(STORE_DOWN.into()),
    ];

    let issued_printed = format!("{issued:?} {issued:#?}");
    let mut errors_printed = String::new();
    for error in &issue_errors {
        errors_printed += &format!(" {error:?} {error:#?}");
    }
    for error in &verify_errors {
        errors_printed += &format!(" {error:?} {error:#?}");
    }

    // The redacted token keeps its recognisable prefix (`Token(skt_<redacted>)`); no body may follow it.
    assert!(issued_printed.contains("skt_<redacted>"), "{issued_printed}");
    assert!(!issued_printed.contains(&issued_text[4..]), "{issued_printed}");
    assert!(!issued_printed.contains(SECRET_TEXT), "{issued_printed}");
    // The errors show no token at all: neither the one that failed to be stored nor a presented one.
    assert!(!errors_printed.contains("skt_"), "{errors_printed}");
    assert!(!errors_printed.contains(&malformed[4..]), "{errors_printed}");
    assert!(!errors_printed.contains(SECRET_TEXT), "{errors_printed}");
}

#[test]
fn now_is_the_service_clock() {
    let service = store_service(MockSessionStore::new(), at(42));

    assert_eq!(service.now(), at(42));
}

// The cascade: sessions bound to a sign-in session end with it.

const CALLER_SESSION: &str = "ba_session_1";

fn caller_session() -> CallerSession {
    CallerSession::parse(CALLER_SESSION).unwrap()
}

fn bound_session(issued: u64, ttl: u64) -> Session {
    session(issued, ttl).bound_to(caller_session())
}

fn directory_answering(
    answers: Vec<Result<bool, crate::ports::DirectoryError>>,
) -> crate::ports::MockUserDirectory {
    let mut directory = crate::ports::MockUserDirectory::new();
    let answers = Mutex::new(answers.into_iter());
    directory
        .expect_session_is_active()
        .withf(|id, _| id.as_str() == CALLER_SESSION)
        .returning(move |_, _| answers.lock().unwrap().next().expect("asked more often than expected"));
    directory
}

fn cascading(
    store: MockSessionStore,
    directory: crate::ports::MockUserDirectory,
    recheck_after: Duration,
) -> SessionService {
    let cascade = crate::callers::CascadeCheck::new(Arc::new(directory), recheck_after);
    store_service(store, at(10)).with_cascade(Arc::new(cascade))
}

#[tokio::test]
async fn a_bound_session_verifies_while_its_sign_in_session_stands_and_the_directory_is_asked_once_per_interval()
 {
    let mut store = MockSessionStore::new();
    store.expect_find().times(2).returning(|_| Ok(Lookup::Active(grant(bound_session(0, 60)))));
    store.expect_revoke().never();
    let service = cascading(store, directory_answering(vec![Ok(true)]), Duration::from_secs(60));

    assert!(service.verify(&presented()).await.is_ok());
    assert!(service.verify(&presented()).await.is_ok(), "the second check is answered from memory");
}

#[tokio::test]
async fn a_bound_session_whose_sign_in_session_ended_is_revoked_and_refused() {
    let mut store = MockSessionStore::new();
    store.expect_find().times(1).returning(|_| Ok(Lookup::Active(grant(bound_session(0, 60)))));
    let expected = digest();
    store.expect_revoke().withf(move |digest| *digest == expected).times(1).returning(|_| Ok(true));
    let service = cascading(store, directory_answering(vec![Ok(false)]), Duration::from_secs(60));

    assert_eq!(service.verify(&presented()).await.unwrap_err(), VerifyError::Rejected(Rejection::Revoked));
}

#[tokio::test]
async fn a_bound_session_is_refused_with_503_material_when_the_directory_is_down_and_is_not_revoked() {
    let mut store = MockSessionStore::new();
    store.expect_find().times(1).returning(|_| Ok(Lookup::Active(grant(bound_session(0, 60)))));
    store.expect_revoke().never();
    let down = crate::ports::DirectoryError::Unavailable("db down".into());
    let service = cascading(store, directory_answering(vec![Err(down)]), Duration::from_secs(60));

    assert_eq!(
        service.verify(&presented()).await.unwrap_err(),
        VerifyError::DirectoryUnavailable("db down".into())
    );
}

#[tokio::test]
async fn an_unbound_session_never_asks_the_directory() {
    let mut directory = crate::ports::MockUserDirectory::new();
    directory.expect_session_is_active().never();
    let service = cascading(store_finding(Lookup::Active(grant(session(0, 60)))), directory, Duration::ZERO);

    assert!(service.verify(&presented()).await.is_ok());
}

#[tokio::test]
async fn issue_binds_the_session_to_the_callers_sign_in_session() {
    let mut store = MockSessionStore::new();
    store.expect_insert().times(1).returning(|_, _| Ok(()));
    let service = service_of(store, secrets_answering(|| Ok(secret())), clock_at(at(0)));
    let request = IssueRequest { caller_session: Some(caller_session()), ..request(None) };

    let issued = service.issue(request).await.unwrap();

    assert_eq!(issued.session.caller_session(), Some(&caller_session()));
    let entries = issued.session.metadata().entries();
    assert_eq!(entries.get("team").map(String::as_str), Some("search"), "the client's metadata is kept");
    assert_eq!(entries.len(), 1, "the binding is not kept in the client's metadata");
}

// Scoped sessions: a scope and limits can only narrow the configuration.

fn scoping() -> crate::sessions::Scoping {
    use sidekey_domain::{
        LimitsParts, LimitsPolicy, ModelPattern, RoutePattern, SecretPattern, UpstreamName, UpstreamPolicy,
    };
    let limits = |parts| Limits::new(parts).unwrap();
    crate::sessions::Scoping {
        upstreams: vec![UpstreamPolicy {
            name: UpstreamName::parse("openai").unwrap(),
            allowed_keys: vec![SecretPattern::parse("openai-*").unwrap()],
            routes: Some(vec![RoutePattern::parse("POST /v1/chat/completions").unwrap()]),
            models: Some(vec![ModelPattern::parse("gpt-4o-mini").unwrap()]),
        }],
        limits: LimitsPolicy::new(
            limits(LimitsParts { max_requests: Some(100), ..LimitsParts::default() }),
            limits(LimitsParts {
                max_requests: Some(1000),
                max_tokens: Some(50_000),
                ..LimitsParts::default()
            }),
        )
        .unwrap(),
    }
}

#[tokio::test]
async fn a_scope_outside_the_configuration_is_refused_before_the_secret_source_is_asked() {
    use sidekey_domain::{RoutePattern, ScopeParts};
    let mut secrets = MockSecretSource::new();
    secrets.expect_fetch().never();
    let service = service_of(MockSessionStore::new(), secrets, clock_at(at(0))).with_scoping(scoping());
    let scope = Scope::new(ScopeParts {
        routes: Some(vec![RoutePattern::parse("GET /v1/files").unwrap()]),
        ..ScopeParts::default()
    })
    .unwrap();

    let refused = service.issue(IssueRequest { scope, ..request(None) }).await.unwrap_err();

    assert!(matches!(&refused, IssueError::InvalidScope(_)), "{refused:?}");
    assert!(refused.to_string().contains("scope.routes"), "{refused}");
}

#[tokio::test]
async fn limits_above_their_ceiling_are_refused_and_missing_ones_come_from_the_defaults_and_ceilings() {
    use sidekey_domain::LimitsParts;
    let mut store = MockSessionStore::new();
    store.expect_insert().times(1).returning(|_, _| Ok(()));
    let mut secrets = MockSecretSource::new();
    secrets.expect_fetch().times(1).returning(|_| Ok(secret()));
    let service = service_of(store, secrets, clock_at(at(0))).with_scoping(scoping());

    let greedy = Limits::new(LimitsParts { max_tokens: Some(60_000), ..LimitsParts::default() }).unwrap();
    let refused = service.issue(IssueRequest { limits: greedy, ..request(None) }).await.unwrap_err();
    assert_eq!(refused.to_string(), "limits.max_tokens must be at most 50000, got 60000");

    let issued = service.issue(request(None)).await.unwrap();
    assert_eq!(issued.session.limits().max_requests(), Some(100), "the default");
    assert_eq!(issued.session.limits().max_tokens(), Some(50_000), "the ceiling caps what was left out");
}
