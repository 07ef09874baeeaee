//! No token and no real key ever reaches a log line, at any level, from any crate; the audit trail is there.
//!
//! Its own test binary because it installs the process's global tracing subscriber (TRACE for every target,
//! `log` records included), writing human and JSON lines into memory, and then runs one whole scenario.
//! The server runs on a [`ManualClock`], so that its one-second session expires when the test says so.
//! The WebSocket library's targets are held at warn as the binary holds them (`QUIET_TARGETS`): at
//! TRACE it prints the upstream handshake, real key included (checked: the test fails without them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sidekey_local::memory::MAX_PURGE_SLEEP;
use sidekey_test_support::ManualClock;
use sidekey_tests::{LogCapture, OTHER_SECRET_KEY_ID, SECRET_KEY_ID, fingerprint, send, spawn_app_on};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How long the memory store's purge task may take to notice that the clock jumped: it looks at the clock
/// at least every [`MAX_PURGE_SLEEP`]; the rest is slack for a loaded machine.
const PURGED_WITHIN: Duration = MAX_PURGE_SLEEP.saturating_add(Duration::from_secs(4));

fn install_capture() -> LogCapture {
    let capture = LogCapture::default();
    // Everything at TRACE, but for the targets the binary holds at warn (its frames and handshakes).
    let filter = sidekey::telemetry::QUIET_TARGETS
        .iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |filter, target| {
            filter.with_target(*target, LevelFilter::WARN)
        });
    tracing_subscriber::registry()
        .with(filter)
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

/// A WebSocket upstream that echoes every message.
async fn echo_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = socket.send(message).await;
                    }
                }
            });
        }
    });
    addr
}

/// Opens a WebSocket on `path` with these headers, sends `payload`, and checks the echo.
async fn echo_through(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
    payload: &str,
) {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut socket, _) =
        tokio_tungstenite::client_async(request, stream).await.expect("the upgrade succeeds");
    socket.send(Message::text(payload)).await.unwrap();
    loop {
        if let Message::Text(text) = socket.next().await.expect("an echo").unwrap() {
            assert_eq!(text.as_str(), payload);
            break;
        }
    }
    socket.close(None).await.unwrap();
}

/// Lines that hold every one of `needles`.
fn lines_with<'a>(logs: &'a str, needles: &[&str]) -> Vec<&'a str> {
    logs.lines().filter(|line| needles.iter().all(|needle| line.contains(needle))).collect()
}

#[tokio::test]
async fn no_token_or_real_key_ever_reaches_the_logs_while_the_audit_trail_does() {
    let capture = install_capture();
    let clock = Arc::new(ManualClock::starting_now());
    let upstream = echo_upstream().await;
    let app = spawn_app_on(clock.clone(), |config| {
        config.upstreams = vec![sidekey_http::UpstreamSettings {
            allowed_secret_key_ids: vec![SECRET_KEY_ID.to_owned()],
            ..sidekey_http::UpstreamSettings::new("realtime", format!("http://{upstream}"))
        }];
    })
    .await;
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

    // WebSockets: the token as a subprotocol, then a one-time ticket in the query; frames both ways.
    let frame = format!("frame-payload-{}", sidekey_test_support::random_hex(16));
    let protocols = format!("sidekey, sidekey-token.{}", kept.token);
    echo_through(
        app.addr,
        "/v1/proxy/realtime/v1/realtime",
        &[("sec-websocket-protocol", protocols)],
        &frame,
    )
    .await;
    let tickets = send(app.request(Method::POST, "/v1/session/tickets", Some(&kept.token))).await;
    assert_eq!(tickets.status(), StatusCode::CREATED);
    let ticket = tickets.json::<serde_json::Value>().await.unwrap()["ticket"].as_str().unwrap().to_owned();
    let with_ticket = format!("/v1/proxy/realtime/v1/realtime?sidekey_ticket={ticket}");
    echo_through(app.addr, &with_ticket, &[], &frame).await;
    assert_eq!(
        send(app.client.get(app.url(&with_ticket))).await.status(),
        StatusCode::UNAUTHORIZED,
        "a reused ticket"
    );

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
    secrets.push(("a ticket", ticket[4..].to_owned()));
    secrets.push(("a relayed frame", frame));
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
