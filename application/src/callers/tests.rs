//! Unit tests of [`CallerAuthenticator`] and [`CascadeCheck`] over mockall mocks of the ports.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::ports::{DirectoryUser, MockCallerVerifier, MockClock, MockUserDirectory};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn clock() -> Arc<MockClock> {
    let mut clock = MockClock::new();
    clock.expect_now().return_const(now());
    Arc::new(clock)
}

fn bearer() -> CallerCredential {
    CallerCredential::Bearer("eyJ.a.jwt".to_owned())
}

fn verifier_answering(answer: Result<VerifiedCredential, CallerVerifierError>) -> MockCallerVerifier {
    let mut verifier = MockCallerVerifier::new();
    verifier.expect_verify().times(1).return_once(move |_, _| answer);
    verifier
}

fn jwt(email: Option<&str>) -> VerifiedCredential {
    VerifiedCredential::Jwt { subject: "jwt-sub-1".to_owned(), email: email.map(str::to_owned) }
}

fn sign_in_id() -> CallerSession {
    CallerSession::parse("ba_1").unwrap()
}

fn sign_in(user_id: &str) -> DirectorySession {
    DirectorySession {
        id: sign_in_id(),
        user_id: user_id.to_owned(),
        expires_at: now() + Duration::from_secs(600),
    }
}

fn authenticator(verifier: MockCallerVerifier, directory: Option<MockUserDirectory>) -> CallerAuthenticator {
    let directory = directory.map(|directory| Arc::new(directory) as Arc<dyn UserDirectory>);
    CallerAuthenticator::new(Arc::new(verifier), directory, clock())
}

fn directory_with(user: Option<&str>, session: Option<DirectorySession>) -> MockUserDirectory {
    let mut directory = MockUserDirectory::new();
    let user = user.map(|id| DirectoryUser { id: id.to_owned(), email: "ada@example.com".to_owned() });
    directory
        .expect_user_by_email()
        .withf(|email| email == "ada@example.com")
        .times(1)
        .return_once(move |_| Ok(user));
    directory.expect_active_session_of().return_once(move |_, _| Ok(session));
    directory
}

#[tokio::test]
async fn without_a_directory_the_jwt_subject_is_the_session_subject() {
    let callers = authenticator(verifier_answering(Ok(jwt(None))), None);

    let caller = callers.authenticate(Some(&bearer()), None).await.unwrap();

    assert_eq!(caller.subject.as_str(), "jwt-sub-1");
    assert_eq!(caller.bound_to, None);
}

#[tokio::test]
async fn with_a_directory_the_user_found_by_email_is_the_subject_bound_to_their_sign_in_session() {
    let directory = directory_with(Some("user_42"), Some(sign_in("user_42")));
    let callers = authenticator(verifier_answering(Ok(jwt(Some("ada@example.com")))), Some(directory));

    let caller = callers.authenticate(Some(&bearer()), None).await.unwrap();

    assert_eq!(caller.subject.as_str(), "user_42");
    assert_eq!(caller.bound_to, Some(sign_in("user_42")));
}

#[tokio::test]
async fn an_unknown_email_is_user_not_found_and_a_user_without_a_sign_in_session_is_no_active_session() {
    let callers =
        authenticator(verifier_answering(Ok(jwt(Some("ada@example.com")))), Some(directory_with(None, None)));
    assert_eq!(callers.authenticate(Some(&bearer()), None).await, Err(CallerAuthError::UserNotFound));

    let callers = authenticator(
        verifier_answering(Ok(jwt(Some("ada@example.com")))),
        Some(directory_with(Some("user_42"), None)),
    );
    assert_eq!(callers.authenticate(Some(&bearer()), None).await, Err(CallerAuthError::NoActiveSession));
}

#[tokio::test]
async fn with_a_directory_a_jwt_without_email_is_refused_and_a_down_directory_is_unavailable() {
    let mut directory = MockUserDirectory::new();
    directory.expect_user_by_email().never();
    let callers = authenticator(verifier_answering(Ok(jwt(None))), Some(directory));
    assert_eq!(
        callers.authenticate(Some(&bearer()), None).await,
        Err(CallerAuthError::Rejected(CallerRejection::MissingClaim))
    );

    let mut directory = MockUserDirectory::new();
    directory
        .expect_user_by_email()
        .return_once(|_| Err(DirectoryError::Unavailable("connection refused".into())));
    let callers = authenticator(verifier_answering(Ok(jwt(Some("ada@example.com")))), Some(directory));
    assert_eq!(
        callers.authenticate(Some(&bearer()), None).await,
        Err(CallerAuthError::DirectoryUnavailable("connection refused".into()))
    );
}

#[tokio::test]
async fn a_sign_in_session_token_names_its_user_and_binds_the_session_to_it() {
    let callers =
        authenticator(verifier_answering(Ok(VerifiedCredential::DirectorySession(sign_in("user_7")))), None);

    let caller =
        callers.authenticate(Some(&CallerCredential::SessionCookie("t.s".into())), None).await.unwrap();

    assert_eq!(caller.subject.as_str(), "user_7");
    assert_eq!(caller.bound_to.map(|session| session.id), Some(sign_in_id()));
}

#[tokio::test]
async fn no_credential_a_refused_one_and_an_unreachable_provider_are_told_apart() {
    let mut verifier = MockCallerVerifier::new();
    verifier.expect_verify().never();
    let callers = authenticator(verifier, None);
    assert_eq!(
        callers.authenticate(None, None).await,
        Err(CallerAuthError::Rejected(CallerRejection::Missing))
    );

    let refused = Err(CallerVerifierError::Rejected(CallerRejection::BadSignature));
    let callers = authenticator(verifier_answering(refused), None);
    assert_eq!(
        callers.authenticate(Some(&bearer()), None).await,
        Err(CallerAuthError::Rejected(CallerRejection::BadSignature))
    );

    let down = Err(CallerVerifierError::ProviderUnavailable("jwks: connection refused".into()));
    let callers = authenticator(verifier_answering(down), None);
    assert!(matches!(
        callers.authenticate(Some(&bearer()), None).await,
        Err(CallerAuthError::ProviderUnavailable(_))
    ));
}

#[test]
fn credentials_never_show_in_debug_output() {
    let printed = format!(
        "{:?} {:?}",
        CallerCredential::Bearer("eyJsecret".into()),
        CallerCredential::SessionCookie("tok.sig".into())
    );
    assert!(!printed.contains("eyJsecret") && !printed.contains("tok.sig"), "{printed}");
}

#[tokio::test]
async fn the_cascade_check_forgets_an_inactive_sign_in_session_and_asks_again_after_the_interval() {
    let mut directory = MockUserDirectory::new();
    let mut answers = vec![Ok(true), Ok(false)].into_iter();
    directory.expect_session_is_active().times(2).returning(move |_, _| answers.next().unwrap());
    let check = CascadeCheck::new(Arc::new(directory), Duration::ZERO);

    assert_eq!(check.is_active(&sign_in_id(), now()).await, Ok(true));
    assert_eq!(check.is_active(&sign_in_id(), now()).await, Ok(false), "an interval of zero asks every time");
}
