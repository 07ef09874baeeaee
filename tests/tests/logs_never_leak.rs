//! No token and no real key ever reaches a log line, at any level, from any crate; the audit trail is there.
//!
//! Its own test binary because it installs the process's global tracing subscriber (TRACE for every target,
//! `log` records included), writing human and JSON lines into memory, and then runs one whole scenario.
//! The server runs on a [`ManualClock`], so that its one-second session expires when the test says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use sidekey_local::memory::MAX_PURGE_SLEEP;
use sidekey_test_support::ManualClock;
use sidekey_tests::{LogCapture, OTHER_SECRET_KEY_ID, SECRET_KEY_ID, fingerprint, send, spawn_app_on};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How long the memory store's purge task may take to notice that the clock jumped: it looks at the clock
/// at least every [`MAX_PURGE_SLEEP`]; the rest is slack for a loaded machine.
const PURGED_WITHIN: Duration = MAX_PURGE_SLEEP.saturating_add(Duration::from_secs(4));

fn install_capture() -> LogCapture {
    let capture = LogCapture::default();
    tracing_subscriber::registry()
        .with(LevelFilter::TRACE)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_span_events(FmtSpan::FULL)
                .with_writer(capture.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_span_events(FmtSpan::FULL)
                .with_writer(capture.clone()),
        )
        .init();
    capture
}

/// Lines that hold every one of `needles`.
fn lines_with<'a>(logs: &'a str, needles: &[&str]) -> Vec<&'a str> {
    logs.lines().filter(|line| needles.iter().all(|needle| line.contains(needle))).collect()
}

#[tokio::test]
async fn no_token_or_real_key_ever_reaches_the_logs_while_the_audit_trail_does() {
    let capture = install_capture();
    let clock = Arc::new(ManualClock::starting_now());
    let app = spawn_app_on(clock.clone(), |_| {}).await;
    let admin_token = app.admin_token.clone().unwrap();

    // Issue, use, inspect, refresh.
    let kept = app.issue_token(SECRET_KEY_ID, None).await;
    let banned = app.issue_token(OTHER_SECRET_KEY_ID, None).await;
    // Under the other key, so that the rotation below leaves it to expire on its own.
    let short = app.issue_token(OTHER_SECRET_KEY_ID, Some(1)).await;
    let rotated = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.verify(&kept.token).await.status(), StatusCode::OK);
    assert_eq!(app.show(&kept.token).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&kept.token).await.status(), StatusCode::OK);
    assert_eq!(send(app.admin(Method::GET, "/v1/admin/sessions")).await.status(), StatusCode::OK);
    let filtered = format!("/v1/admin/sessions?secret_key_id={SECRET_KEY_ID}&limit=10");
    assert_eq!(send(app.admin(Method::GET, &filtered)).await.status(), StatusCode::OK);

    // Tokens that are refused: mangled, unknown, on the admin API.
    let truncated = &kept.token[..kept.token.len() - 1];
    let mut flipped = kept.token.clone().into_bytes();
    flipped[20] = if flipped[20] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let unknown = sidekey_domain::Token::generate().unwrap().expose().to_owned();
    for refused in ["garbage", truncated, &flipped, &unknown] {
        assert_eq!(app.verify(refused).await.status(), StatusCode::UNAUTHORIZED);
    }
    let as_admin = send(app.request(Method::GET, "/v1/admin/sessions", Some(&kept.token))).await;
    assert_eq!(as_admin.status(), StatusCode::FORBIDDEN);
    let wrong_admin =
        send(app.request(Method::GET, "/v1/admin/sessions", Some(&format!("{admin_token}x")))).await;
    assert_eq!(wrong_admin.status(), StatusCode::UNAUTHORIZED);

    // Revocations: by the token itself, by id, by key; each refused afterwards.
    assert_eq!(app.revoke(&kept.token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.verify(&kept.token).await.status(), StatusCode::UNAUTHORIZED);
    let by_id = format!("/v1/admin/sessions/{}", banned.session_id);
    assert_eq!(send(app.admin(Method::DELETE, &by_id)).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.verify(&banned.token).await.status(), StatusCode::UNAUTHORIZED);
    let rotation = send(
        app.admin(Method::POST, "/v1/admin/revocations").json(&json!({ "secret_key_id": SECRET_KEY_ID })),
    );
    assert_eq!(rotation.await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&rotated.token).await.status(), StatusCode::UNAUTHORIZED);

    // Requests that fail for other reasons.
    assert_eq!(app.issue(&json!({ "secret_key_id": "no-such-key" })).await.status(), 422);
    assert_eq!(app.issue(&json!({ "secret_key_id": "bad name" })).await.status(), 422);

    // Expiry: the one-second session, past its expires_at, and the purge that follows (the purge task
    // runs on its own: its event is awaited, not assumed).
    clock.advance(Duration::from_secs(2));
    assert_eq!(app.verify(&short.token).await.status(), StatusCode::UNAUTHORIZED);
    let waiting_since = Instant::now();
    while !capture.text().contains("ended expired sessions") {
        assert!(waiting_since.elapsed() < PURGED_WITHIN, "no purge within {PURGED_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (real_key, other_real_key) = (app.real_key.clone(), app.other_real_key.clone());
    app.shutdown().await;
    let logs = capture.text();

    // The capture is real and at TRACE: it holds both formats and a DEBUG event of the store's purge.
    assert!(logs.lines().any(|line| line.starts_with('{')), "no JSON lines were captured");
    assert!(logs.lines().any(|line| line.contains(" INFO ")), "no human lines were captured");
    assert!(logs.contains("ended expired sessions"), "DEBUG events were not captured:\n{logs}");

    let mut secrets: Vec<(&str, String)> = vec![
        ("a real key", real_key),
        ("the other real key", other_real_key),
        ("the admin token", admin_token),
    ];
    for issued in [&kept, &banned, &short, &rotated] {
        secrets.push(("a token", issued.token.clone()));
        secrets.push(("a token without its prefix", issued.token[4..].to_owned()));
        secrets.push(("a token's random body", issued.token[4..47].to_owned()));
    }
    secrets.push(("a truncated token", truncated[4..].to_owned()));
    secrets.push(("a mangled token", flipped[4..].to_owned()));
    for (what, secret) in &secrets {
        let leaks = lines_with(&logs, &[secret]);
        assert!(leaks.is_empty(), "{what} is in the logs:\n{}", leaks.join("\n"));
    }

    // The audit trail: issue, refusal and revocation, each with the token's 12-hex-character fingerprint.
    let kept_fingerprint = fingerprint(&kept.token);
    assert_eq!(kept_fingerprint.len(), 12);
    assert!(kept_fingerprint.bytes().all(|b| b.is_ascii_hexdigit()), "{kept_fingerprint}");
    for event in ["session.issued", "verification.refused", "session.revoked"] {
        let lines = lines_with(&logs, &["sidekey::audit", event, &kept_fingerprint]);
        assert!(!lines.is_empty(), "no {event} audit event with fingerprint {kept_fingerprint}:\n{logs}");
    }
    for issued in [&banned, &short, &rotated] {
        let lines = lines_with(&logs, &["session.issued", &fingerprint(&issued.token)]);
        assert!(!lines.is_empty(), "no session.issued event for {}", issued.session_id);
    }
    let revoked_by_id = lines_with(&logs, &["session.revoked", &banned.session_id]);
    assert!(!revoked_by_id.is_empty(), "no session.revoked event for the admin revocation by id");
    assert!(!lines_with(&logs, &["sessions.revoked", SECRET_KEY_ID]).is_empty(), "no bulk revocation event");
    let refused_rotated =
        lines_with(&logs, &["verification.refused", "revoked", &fingerprint(&rotated.token)]);
    assert!(!refused_rotated.is_empty(), "no refusal event for the token revoked by the key rotation");
}
