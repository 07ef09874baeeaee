//! Metered sessions through the proxy: each request reserves tokens before it is forwarded and settles
//! with the usage the upstream reported, read from the answer on its way to the client (Chat
//! Completions, Responses and Anthropic Messages; JSON, streamed and cut); token budgets of a session
//! and of a subject hold across instances, and a subject's day ends at midnight UTC.
//!
//! Settlement runs just after an answer ends, so the usage is polled for briefly rather than read once.
//! A subject's totals are read as the admin reads them, `GET /v1/admin/usage?subject=…`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey::config::AuthMode;
use sidekey_http::UpstreamSettings;
use sidekey_test_support::ManualClock;
use sidekey_tests::{SECRET_KEY_ID, TestApp, header, secret, send};

use super::instances::Instances;
use super::upstream::{
    ANTHROPIC_START_OUTPUT, ANTHROPIC_USAGE, CHAT_USAGE, FakeUpstream, RESPONSES_USAGE, Reported,
};
use super::{app_with, assert_refused, upstream_config};

/// Each upstream's `reserve_tokens` here: distinct from every usage the fake upstream reports, so a
/// settlement with the reservation cannot pass for one with the usage.
const RESERVE: u64 = 300;

/// How long settlement may take after an answer has ended.
const SETTLE_BOUND: Duration = Duration::from_secs(5);

/// `openai` (usage `openai`) and `anthropic` (usage `anthropic`, the key in `x-api-key`), both at
/// `upstream`, both reserving [`RESERVE`].
fn metered_upstreams(upstream: &FakeUpstream) -> Vec<UpstreamSettings> {
    let mut openai = upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID]);
    openai.reserve_tokens = RESERVE;
    let mut anthropic = upstream_config("anthropic", &upstream.url(""), &[SECRET_KEY_ID]);
    anthropic.usage = sidekey_http::proxy::usage::UsageFormat::Anthropic;
    anthropic.credential_header = "x-api-key".to_owned();
    anthropic.credential_scheme = String::new();
    anthropic.reserve_tokens = RESERVE;
    vec![openai, anthropic]
}

/// Issues a session of [`SECRET_KEY_ID`] with `limits`; returns its token.
async fn issue_limited(app: &TestApp, limits: Value) -> String {
    let response = app.issue(&json!({ "secret_key_id": SECRET_KEY_ID, "limits": limits })).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// What a request with this body reserves: its input estimate (a token per 4 bytes) and [`RESERVE`].
fn reservation(body: &str) -> Reported {
    Reported { input: body.len() as u64 / 4, output: RESERVE }
}

/// Polls `GET /v1/session` until its usage is `expected`; returns the session then shown.
///
/// # Panics
/// When it is not within [`SETTLE_BOUND`].
async fn settled(app: &TestApp, token: &str, expected: Reported) -> Value {
    let started = Instant::now();
    loop {
        let shown: Value = app.show(token).await.json().await.unwrap();
        let usage = &shown["usage"];
        if usage["input_tokens"] == expected.input && usage["output_tokens"] == expected.output {
            return shown;
        }
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "expected {expected:?} to be settled, the session shows {shown}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request body for the API that `path` ends in (chat, responses or Anthropic messages), streamed or
/// not; with `include_usage` the client asks a chat stream for its usage itself.
fn llm_body(path: &str, stream: bool, include_usage: bool) -> String {
    let mut body = if path.ends_with("/v1/messages") {
        json!({ "model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{ "role": "user", "content": "hi" }] })
    } else if path.ends_with("/responses") {
        json!({ "model": "gpt-4o-mini", "input": "hi" })
    } else {
        json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] })
    };
    if stream {
        body["stream"] = json!(true);
    }
    if include_usage {
        body["stream_options"] = json!({ "include_usage": true });
    }
    body.to_string()
}

fn post(app: &TestApp, path: &str, token: &str, body: &str) -> reqwest::RequestBuilder {
    app.request(Method::POST, path, Some(token))
        .header("content-type", "application/json")
        .body(body.to_owned())
}

#[tokio::test]
async fn plain_and_streamed_answers_meter_exactly_in_all_three_formats() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(metered_upstreams(&upstream)).await;
    let cases = [
        ("/v1/proxy/openai/v1/chat/completions", false, CHAT_USAGE),
        ("/v1/proxy/openai/v1/chat/completions", true, CHAT_USAGE),
        ("/v1/proxy/openai/v1/responses", false, RESPONSES_USAGE),
        ("/v1/proxy/openai/v1/responses", true, RESPONSES_USAGE),
        ("/v1/proxy/anthropic/v1/messages", false, ANTHROPIC_USAGE),
        ("/v1/proxy/anthropic/v1/messages", true, ANTHROPIC_USAGE),
    ];
    for (path, stream, expected) in cases {
        // A session per answer: its usage is that answer's alone.
        let token = issue_limited(&app, json!({ "max_tokens": 100_000 })).await;
        // The client asks a chat stream for its usage itself here: it then gets the usage chunk too.
        let body = llm_body(path, stream, stream);
        let response = send(post(&app, &format!("{path}?gap_ms=0"), &token, &body)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains("world!"), "{path}: {text}");
        if stream && path.ends_with("/chat/completions") {
            assert!(text.contains(r#""choices":[]"#), "the usage chunk the client asked for is kept: {text}");
        }
        let shown = settled(&app, &token, expected).await;
        assert_eq!(shown["usage"]["requests"], 1, "{path}: {shown}");
        // Settled: nothing is reserved any more.
        assert_eq!(shown["remaining"]["tokens"], 100_000 - expected.input - expected.output, "{shown}");
    }
    assert_eq!(upstream.seen().len(), cases.len());
    app.shutdown().await;
}

/// The events of a server-sent-event stream, each with its blank line.
fn events(stream: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stream).split_inclusive("\n\n").map(str::to_owned).collect()
}

#[tokio::test]
async fn a_chat_stream_is_asked_for_its_usage_and_the_client_gets_every_other_byte_unchanged() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(metered_upstreams(&upstream)).await;
    let token = issue_limited(&app, json!({ "max_tokens": 100_000 })).await;

    let body = llm_body("/chat/completions", true, false);
    let path = "/v1/proxy/openai/v1/chat/completions?gap_ms=50";
    let mut response = send(post(&app, path, &token, &body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("the stream continues") {
        received.extend_from_slice(&chunk);
    }

    let forwarded: Value = serde_json::from_slice(&upstream.only_request().body).unwrap();
    assert_eq!(forwarded["stream_options"], json!({ "include_usage": true }), "{forwarded}");
    let sent = upstream.streamed().pop().expect("the upstream streamed");
    let usage_only: Vec<String> =
        events(&sent).into_iter().filter(|event| event.contains(r#""choices":[]"#)).collect();
    assert_eq!(
        usage_only.len(),
        1,
        "the upstream sent one usage-only chunk: {}",
        String::from_utf8_lossy(&sent)
    );
    let expected: String = events(&sent).into_iter().filter(|event| *event != usage_only[0]).collect();
    assert_eq!(String::from_utf8_lossy(&received), expected, "the client's stream");
    settled(&app, &token, CHAT_USAGE).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_midway_settles_with_the_usage_reported_so_far_or_the_whole_reservation() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(metered_upstreams(&upstream)).await;
    let anthropic_body = llm_body("/v1/messages", true, false);
    let chat_body = llm_body("/chat/completions", true, false);
    let responses_body = llm_body("/responses", true, false);
    let cases = [
        // message_start (the input, one output token), content_block_start, ping, one text delta: cut.
        (
            "/v1/proxy/anthropic/v1/messages",
            &anthropic_body,
            4,
            Reported { input: ANTHROPIC_USAGE.input, output: ANTHROPIC_START_OUTPUT },
        ),
        // Chat and Responses streams report usage only at their end: the reservation is settled.
        ("/v1/proxy/openai/v1/chat/completions", &chat_body, 2, reservation(&chat_body)),
        ("/v1/proxy/openai/v1/responses", &responses_body, 2, reservation(&responses_body)),
    ];
    for (path, body, cut_after, expected) in cases {
        let token = issue_limited(&app, json!({ "max_tokens": 100_000 })).await;
        let path = format!("{path}?gap_ms=0&cut_after={cut_after}");
        let response = send(post(&app, &path, &token, body)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.bytes().await.is_err(), "{path}: the cut stream ended like a complete one");
        let shown = settled(&app, &token, expected).await;
        assert_eq!(shown["remaining"]["tokens"], 100_000 - expected.input - expected.output, "{shown}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn answers_of_a_limited_session_say_how_many_requests_and_tokens_remain() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(metered_upstreams(&upstream)).await;
    let path = "/v1/proxy/openai/v1/chat/completions";
    let body = llm_body(path, false, false);
    let reserved = reservation(&body);

    let token = issue_limited(&app, json!({ "max_requests": 10, "max_tokens": 10_000 })).await;
    let response = send(post(&app, path, &token, &body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-sidekey-requests-remaining").as_deref(), Some("9"));
    // This request's own reservation is still held while its answer is on its way.
    let tokens = 10_000 - reserved.input - reserved.output;
    assert_eq!(header(&response, "x-sidekey-tokens-remaining"), Some(tokens.to_string()));
    response.bytes().await.unwrap();
    settled(&app, &token, CHAT_USAGE).await;

    let response = send(post(&app, path, &token, &body)).await;
    assert_eq!(header(&response, "x-sidekey-requests-remaining").as_deref(), Some("8"));
    let tokens = 10_000 - CHAT_USAGE.input - CHAT_USAGE.output - reserved.input - reserved.output;
    assert_eq!(header(&response, "x-sidekey-tokens-remaining"), Some(tokens.to_string()));

    // A request budget alone: only the requests are told.
    let token = issue_limited(&app, json!({ "max_requests": 5 })).await;
    let response = send(post(&app, path, &token, &body)).await;
    assert_eq!(header(&response, "x-sidekey-requests-remaining").as_deref(), Some("4"));
    assert_eq!(header(&response, "x-sidekey-tokens-remaining"), None);
    // No limit at all: nothing is counted, nothing is told.
    let token = issue_limited(&app, json!({})).await;
    let response = send(post(&app, path, &token, &body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-sidekey-requests-remaining"), None);
    assert_eq!(header(&response, "x-sidekey-tokens-remaining"), None);
    app.shutdown().await;
}

#[tokio::test]
async fn requests_that_cannot_generate_are_counted_but_reserve_and_use_no_tokens() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(metered_upstreams(&upstream)).await;
    let token = issue_limited(&app, json!({ "max_requests": 10, "max_tokens": 1000 })).await;
    let reads = [
        (Method::GET, "/v1/proxy/openai/v1/models"),
        // Lists stored completions: the path of the API that generates, the method of one that reads.
        (Method::GET, "/v1/proxy/openai/v1/chat/completions"),
        (Method::GET, "/v1/proxy/openai/v1/responses/resp_fake"),
        (Method::HEAD, "/v1/proxy/openai/v1/models"),
        (Method::DELETE, "/v1/proxy/openai/v1/responses/resp_fake"),
    ];
    for (method, path) in &reads {
        let response = send(app.request(method.clone(), path, Some(&token))).await;
        assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
        assert_eq!(
            header(&response, "x-sidekey-tokens-remaining").as_deref(),
            Some("1000"),
            "{method} {path}"
        );
        response.bytes().await.unwrap();
    }
    let shown = settled(&app, &token, Reported { input: 0, output: 0 }).await;
    assert_eq!(shown["usage"]["requests"], reads.len(), "{shown}");
    assert_eq!(shown["remaining"]["tokens"], 1000, "{shown}");
    app.shutdown().await;
}

#[tokio::test]
async fn two_instances_on_one_redis_admit_only_what_the_token_budget_reserves_and_settle_what_was_reported() {
    let upstream = FakeUpstream::start().await;
    let settings = metered_upstreams(&upstream);
    let Some(instances) = Instances::start(|config| config.upstreams = settings.clone(), None).await else {
        return;
    };
    let body = llm_body("/chat/completions", false, false);
    let reserved = reservation(&body);
    // Ten reservations exactly.
    let budget = 10 * (reserved.input + reserved.output);
    let token = issue_limited(&instances.a, json!({ "max_tokens": budget })).await;

    // The upstream holds the answers of the admitted requests until every admission has been decided:
    // no settlement can free budget for a later request meanwhile.
    let path = "/v1/proxy/openai/v1/chat/completions?hold=1";
    let mut pending: FuturesUnordered<_> = (0..100)
        .map(|index| {
            let app = if index % 2 == 0 { &instances.a } else { &instances.b };
            let request = post(app, path, &token, &body);
            async move {
                let response = send(request).await;
                let status = response.status().as_u16();
                (status, response.text().await.unwrap())
            }
        })
        .collect();
    let mut answered = Vec::new();
    let refusals_in = tokio::time::timeout(Duration::from_secs(8), async {
        while answered.len() < 90 {
            answered.push(pending.next().await.expect("a request left"));
        }
    })
    .await;
    assert!(refusals_in.is_ok(), "only {} answered: more than 10 were admitted", answered.len());
    // The admitted ones may still be on their way to the upstream.
    let started = Instant::now();
    while upstream.seen().len() < 10 && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.seen().len(), 10, "requests that reached the upstream (10 fit the budget)");
    upstream.release();
    while let Some(answer) = pending.next().await {
        answered.push(answer);
    }

    let ok = answered.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(ok, 10, "{answered:?}");
    for (status, text) in answered.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 429, "{text}");
        let problem: Value = serde_json::from_str(text).unwrap();
        assert_eq!(problem["code"], "quota_exceeded", "{problem}");
        assert_eq!(problem["error"]["code"], "quota_exceeded", "{problem}");
    }
    assert_eq!(upstream.seen().len(), 10);
    let expected = Reported { input: 10 * CHAT_USAGE.input, output: 10 * CHAT_USAGE.output };
    let shown = settled(&instances.b, &token, expected).await;
    assert_eq!(shown["usage"]["requests"], 10, "{shown}");
    assert_eq!(shown["remaining"]["tokens"], budget - expected.input - expected.output, "{shown}");
    instances.finish().await;
}

/// The caller JWTs' shared secret, issuer and audience.
const HS256_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes-for-metering";
const ISSUER: &str = "http://127.0.0.1:3000";

/// An HS256 caller JWT for `subject`, valid for ten minutes of wall-clock time (the JWT library checks
/// expiry against the system clock, not the service's).
fn caller_jwt(subject: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({ "sub": subject, "iss": ISSUER, "aud": ISSUER, "iat": now, "exp": now + 600 });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS256_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Issues a session for `subject` (through a caller JWT); returns its token.
async fn issue_for(app: &TestApp, subject: &str) -> String {
    let response = send(
        app.request(Method::POST, "/v1/sessions", Some(&caller_jwt(subject)))
            .json(&json!({ "secret_key_id": SECRET_KEY_ID })),
    )
    .await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["subject"], subject, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_subject_budget_spans_sessions_and_instances_and_resets_at_midnight_utc() {
    const DAILY: u64 = 1000;
    // 90 s before the next UTC midnight, by the wall clock's date.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let midnight = (now / 86_400 + 1) * 86_400;
    let clock = Arc::new(ManualClock::starting_at(UNIX_EPOCH + Duration::from_secs(midnight - 90)));

    let upstream = FakeUpstream::start().await;
    let settings = metered_upstreams(&upstream);
    let tweak = |config: &mut sidekey::Config| {
        config.upstreams = settings.clone();
        config.auth.mode = AuthMode::Jwt;
        config.auth.jwt.hs256_secret = Some(secret(HS256_SECRET));
        config.auth.jwt.issuer = Some(ISSUER.to_owned());
        config.auth.jwt.audience = Some(ISSUER.to_owned());
        config.limits.subject.tokens_per_day = Some(DAILY);
    };
    let Some(instances) = Instances::start(tweak, Some(clock.clone())).await else { return };
    let (a, b) = (&instances.a, &instances.b);
    let on_a = issue_for(a, "user-ada").await;
    let on_b = issue_for(b, "user-ada").await;
    let stranger = issue_for(a, "user-bob").await;

    let chat = "/v1/proxy/openai/v1/chat/completions";
    let body = llm_body(chat, false, false);
    let reserved = reservation(&body);
    // 600 tokens by one session on one instance, 350 by the other on the other: 50 left, less than a
    // request reserves.
    let first = Reported { input: 400, output: 200 };
    let second = Reported { input: 250, output: 100 };
    for (app, token, usage) in [(a, &on_a, first), (b, &on_b, second)] {
        let path = format!("{chat}?input_tokens={}&output_tokens={}", usage.input, usage.output);
        let response = send(post(app, &path, token, &body)).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.unwrap();
        settled(app, token, usage).await;
    }

    for (app, token) in [(a, &on_a), (b, &on_b), (b, &on_a), (a, &on_b)] {
        let response = send(post(app, chat, token, &body)).await;
        assert_eq!(header(&response, "retry-after").as_deref(), Some("90"), "until midnight UTC");
        let problem = assert_refused(response, 429, "quota_exceeded").await;
        assert!(problem["detail"].as_str().unwrap().contains("user"), "{problem}");
    }
    // A new session of the same user gets no fresh budget.
    let fresh = issue_for(b, "user-ada").await;
    assert_refused(send(post(a, chat, &fresh, &body)).await, 429, "quota_exceeded").await;
    assert_eq!(upstream.seen().len(), 2, "a request over the user's budget reached the upstream");
    // Another user's budget is their own.
    let response = send(post(b, chat, &stranger, &body)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.unwrap();

    // The admin reads each user's day and month on either instance: refusals counted nowhere.
    let ada = totals(2, first.input + second.input, first.output + second.output);
    let ada_before = json!({ "day": ada, "month": ada });
    usage_becomes(b, "user-ada", &ada_before).await;
    let bob = totals(1, CHAT_USAGE.input, CHAT_USAGE.output);
    usage_becomes(a, "user-bob", &json!({ "day": bob, "month": bob })).await;

    clock.advance(Duration::from_secs(91));
    let response = send(post(a, chat, &on_a, &body)).await;
    assert_eq!(response.status(), StatusCode::OK, "a new UTC day, a new budget");
    let left = DAILY - reserved.input - reserved.output;
    assert_eq!(
        header(&response, "x-sidekey-tokens-remaining"),
        Some(left.to_string()),
        "the user's tokens left"
    );
    response.bytes().await.unwrap();
    let response = send(post(b, chat, &on_b, &body)).await;
    assert_eq!(response.status(), StatusCode::OK, "on the other instance too");
    response.bytes().await.unwrap();
    assert_eq!(upstream.seen().len(), 5);

    // The new day counts from zero; the month goes on, unless that midnight began a month too.
    let today = totals(2, 2 * CHAT_USAGE.input, 2 * CHAT_USAGE.output);
    let new_month =
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(midnight).unwrap()).unwrap().day() == 1;
    let month = if new_month {
        today.clone()
    } else {
        totals(
            4,
            ada["input_tokens"].as_u64().unwrap() + today["input_tokens"].as_u64().unwrap(),
            ada["output_tokens"].as_u64().unwrap() + today["output_tokens"].as_u64().unwrap(),
        )
    };
    usage_becomes(a, "user-ada", &json!({ "day": today, "month": month })).await;
    instances.finish().await;
}

/// One window's totals as `GET /v1/admin/usage` shows them.
fn totals(requests: u64, input_tokens: u64, output_tokens: u64) -> Value {
    json!({ "requests": requests, "input_tokens": input_tokens, "output_tokens": output_tokens })
}

/// Polls `GET /v1/admin/usage?subject=…` on `app` until it answers `expected` (settlement runs just after
/// each answer).
///
/// # Panics
/// When it does not within [`SETTLE_BOUND`].
async fn usage_becomes(app: &TestApp, subject: &str, expected: &Value) {
    let started = Instant::now();
    loop {
        let response = send(app.admin(Method::GET, &format!("/v1/admin/usage?subject={subject}"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        let usage: Value = response.json().await.unwrap();
        if &usage == expected {
            return;
        }
        assert!(started.elapsed() < SETTLE_BOUND, "{subject}: expected {expected}, the admin sees {usage}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
