//! Neither the real key nor the token reaches a log line while requests are proxied, at any level.
//!
//! The capture is this test's thread's default subscriber (a `#[tokio::test]` runs the server, its
//! connections and the proxy's client on the test's own thread), so other tests running meanwhile are
//! neither captured nor slowed.

use reqwest::Method;
use sidekey_tests::{LogCapture, SECRET_KEY_ID, send};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

use super::upstream::{FakeUpstream, closed_port};
use super::{app_with, upstream_config};

#[tokio::test]
async fn no_real_key_or_token_reaches_the_logs_of_proxied_requests() {
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::TRACE)
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(capture.clone()))
        .with(tracing_subscriber::fmt::layer().json().with_writer(capture.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let upstream = FakeUpstream::start().await;
    let down = closed_port().await;
    let mut slow = upstream_config("slow", &upstream.url(""), &[SECRET_KEY_ID]);
    slow.response_timeout_ms = 200;
    let mut query = upstream_config("query", &upstream.url(""), &[SECRET_KEY_ID]);
    query.credential_query = Some("key".to_owned());
    let app = app_with(vec![
        upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID]),
        upstream_config("anthropic", &upstream.url(""), &["anthropic-*"]),
        upstream_config("down", &format!("http://{down}"), &[SECRET_KEY_ID]),
        slow,
        query,
    ])
    .await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for (path, status) in [
        ("/v1/proxy/openai/v1/chat/completions", 200),
        ("/v1/proxy/openai/sse?n=2&gap_ms=10", 200),
        ("/v1/proxy/query/v1beta/models?key=mine", 200),
        ("/v1/proxy/openai/status/401", 401),
        ("/v1/proxy/anthropic/v1/messages", 403),
        ("/v1/proxy/down/v1/models", 502),
        ("/v1/proxy/slow/sleep?ms=1000", 504),
        ("/v1/proxy/nope/x", 404),
    ] {
        // Other tests of this binary, on other threads, register the same callsites with no subscriber;
        // a registration racing this thread's `set_default` can cache "never" for a callsite. Recompute.
        tracing::callsite::rebuild_interest_cache();
        let response = send(app.request(Method::POST, path, Some(&issued.token)).body("{}")).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        let _ = response.bytes().await;
    }
    let real_key = app.real_key.clone();
    app.shutdown().await;

    let logs = capture.text();
    assert!(!logs.contains(&real_key), "the real key is in the logs");
    assert!(!logs.contains(&issued.token), "the token is in the logs");
    // The trail is there: the proxied requests, the refusal and the failures, by upstream and session.
    for needle in ["proxied", "refused", "upstream failed", "upstream timed out"] {
        let line = logs.lines().find(|line| line.contains(needle) && line.contains(&issued.session_id));
        assert!(line.is_some(), "no log line with {needle:?} and the session id:\n{logs}");
    }
}
