//! The standard OpenAI Python SDK, unchanged, through the proxy: `base_url` at
//! `/v1/proxy/openai/v1`, the session token as its API key; a plain and a streamed chat completion.
//!
//! Needs `python3` with the `openai` package (`python3 -m pip install openai`). Without it the test
//! prints "skipped: …" and passes, except under `CI=true` or with `SIDEKEY_REQUIRE_SDK=1`, which make
//! a missing SDK a failure.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use sidekey_tests::SECRET_KEY_ID;

use super::upstream::{CHAT_USAGE, FakeUpstream};
use super::{app_with, upstream_config};

/// The client: one plain completion, then a streamed one whose deltas it times.
const SCRIPT: &str = r#"
import json, sys, time
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0, timeout=20)
plain = client.chat.completions.create(
    model="fake-model", messages=[{"role": "user", "content": "Say hello"}])
started = time.monotonic()
deltas, arrivals = [], []
for chunk in client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "Say hello"}], stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        deltas.append(chunk.choices[0].delta.content)
        arrivals.append(time.monotonic() - started)
print(json.dumps({"plain": plain.choices[0].message.content, "usage": plain.usage.total_tokens,
                  "deltas": deltas, "arrivals": arrivals}))
"#;

/// Runs `python3 ARGS…` off the runtime's thread (the server under test runs on it) and collects its output.
pub(super) async fn python(args: Vec<String>) -> std::io::Result<Output> {
    tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args(args)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env("NO_PROXY", "127.0.0.1")
            .output()
    })
    .await
    .expect("the python task ran")
}

/// Whether python3 can import the openai package. When it cannot, says the test is skipped, unless
/// `SIDEKEY_REQUIRE_SDK` or `CI=true` is set, in which case the test fails instead.
pub(super) async fn sdk_available_or_skipped() -> bool {
    let probe = python(vec!["-c".to_owned(), "import openai".to_owned()]).await;
    if probe.is_ok_and(|output| output.status.success()) {
        return true;
    }
    assert!(
        std::env::var("SIDEKEY_REQUIRE_SDK").is_err(),
        "SIDEKEY_REQUIRE_SDK is set but python3 cannot import openai"
    );
    // Says "skipped: …" on stderr, and fails under CI=true: a CI run never passes without the SDK.
    sidekey_test_support::skip(
        "python3 with the openai package is not installed (python3 -m pip install openai)",
    );
    false
}

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged_through_the_proxy_plain_and_streamed() {
    if !sdk_available_or_skipped().await {
        return;
    }
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let base_url = app.url("/v1/proxy/openai/v1");
    // The script's client gives up after 20 s per request; the bound here only reports a hang clearly.
    let run = python(vec!["-c".to_owned(), SCRIPT.to_owned(), base_url, issued.token.clone()]);
    let output = tokio::time::timeout(Duration::from_secs(90), run).await.expect("the SDK finishes").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK failed: {stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{stderr}"));

    assert_eq!(result["plain"], "Hello, world!");
    assert_eq!(result["usage"], CHAT_USAGE.input + CHAT_USAGE.output);
    assert_eq!(result["deltas"], serde_json::json!(["Hello", ", ", "world!"]));
    // The deltas reached the SDK as the upstream sent them, 200 ms apart, not all at the end.
    let arrivals: Vec<f64> = serde_json::from_value(result["arrivals"].clone()).unwrap();
    assert!(arrivals[2] - arrivals[0] > 0.3, "the deltas arrived together: {arrivals:?}");

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some(format!("Bearer {}", app.real_key).as_str()));
        assert!(!request.contains(&issued.token), "the token reached the upstream: {request:#?}");
    }
    app.shutdown().await;
}
