//! The JSON body rules of `POST /v1/sessions` (and the admin revocations): 400, 413, 422.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_tests::{PROBLEM_JSON, SECRET_KEY_ID, TestApp, assert_problem, raw_http, send, spawn_app};

/// The contract's default JSON body limit.
const BODY_LIMIT: usize = 16 * 1024;

/// A valid issue request padded with trailing whitespace to exactly `len` bytes: if the size limit did not
/// apply, the server would issue a session for it.
fn padded_issue_body(len: usize) -> String {
    let mut body = json!({ "secret_key_id": SECRET_KEY_ID }).to_string();
    assert!(body.len() <= len);
    body.extend(std::iter::repeat_n(' ', len - body.len()));
    body
}

async fn post_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url("/v1/sessions")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    send(request).await
}

/// Issues `body` and expects a 422 `validation_failed` whose detail names `field`.
async fn assert_validation_failed(app: &TestApp, body: &str, field: &str) {
    let response = post_raw(app, Some("application/json"), body.to_owned()).await;
    let problem = assert_problem(response, 422, "validation_failed").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(field), "the detail for {body} must name {field}: {detail:?}");
}

#[tokio::test]
async fn malformed_json_is_an_invalid_request() {
    let app = spawn_app().await;
    for body in [r#"{"secret_key_id":"#, "not json", r#"{"secret_key_id":"openai-prod"} trailing"#, "{'a':1}"]
    {
        let response = post_raw(&app, Some("application/json"), body).await;
        assert_problem(response, 400, "invalid_request").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrong_content_type_is_an_invalid_request() {
    let app = spawn_app().await;
    let body = json!({ "secret_key_id": SECRET_KEY_ID }).to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml"] {
        let response = post_raw(&app, Some(content_type), body.clone()).await;
        assert_problem(response, 400, "invalid_request").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_missing_content_type_is_an_invalid_request() {
    let app = spawn_app().await;
    let response = post_raw(&app, None, json!({ "secret_key_id": SECRET_KEY_ID }).to_string()).await;
    assert_problem(response, 400, "invalid_request").await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_empty_body_is_an_invalid_request() {
    let app = spawn_app().await;
    let response = post_raw(&app, Some("application/json"), "").await;
    assert_problem(response, 400, "invalid_request").await;
    let response = send(app.client.post(app.url("/v1/sessions"))).await;
    assert_problem(response, 400, "invalid_request").await;
    app.shutdown().await;
}

#[tokio::test]
async fn json_with_a_charset_parameter_is_accepted() {
    let app = spawn_app().await;
    let body = json!({ "secret_key_id": SECRET_KEY_ID }).to_string();
    let response = post_raw(&app, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted() {
    let app = spawn_app().await;
    let response = post_raw(&app, Some("application/json"), padded_issue_body(BODY_LIMIT)).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await.unwrap());
    app.shutdown().await;
}

#[tokio::test]
async fn a_17_kib_body_with_a_content_length_is_refused_with_payload_too_large() {
    let app = spawn_app().await;
    let response = post_raw(&app, Some("application/json"), padded_issue_body(17 * 1024)).await;
    assert_problem(response, 413, "payload_too_large").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_17_kib_chunked_body_without_a_content_length_is_refused_with_payload_too_large() {
    let app = spawn_app().await;
    let body = padded_issue_body(17 * 1024);
    let mut request = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    let response = raw_http(app.addr, &request).await;
    assert_eq!(response.status, 413, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some(PROBLEM_JSON));
    assert_eq!(response.json()["code"], "payload_too_large");

    // The same body under the limit, chunked, is read fine (so the 413 above is about size).
    let small = json!({ "secret_key_id": SECRET_KEY_ID }).to_string();
    let request = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        app.addr,
        small.len()
    );
    assert_eq!(raw_http(app.addr, request.as_bytes()).await.status, 201);
    app.shutdown().await;
}

#[tokio::test]
async fn a_ttl_seconds_outside_the_bounds_is_a_validation_failure_naming_the_field() {
    let app = spawn_app().await;
    for ttl in ["0", "86401", "-1", "\"abc\"", "1.5", "99999999999999999999999", "true"] {
        let body = format!(r#"{{"secret_key_id":"{SECRET_KEY_ID}","ttl_seconds":{ttl}}}"#);
        assert_validation_failed(&app, &body, "ttl_seconds").await;
    }
    // The bounds themselves are allowed.
    for ttl in [1, 86_400] {
        assert_eq!(
            app.issue(&json!({ "secret_key_id": SECRET_KEY_ID, "ttl_seconds": ttl })).await.status(),
            201
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_ttl_seconds_beyond_any_float_is_a_validation_failure_naming_the_field() {
    // `1e400` is well-formed JSON (RFC 8259 puts no limit on exponents); only its value is out of range.
    let app = spawn_app().await;
    let body = format!(r#"{{"secret_key_id":"{SECRET_KEY_ID}","ttl_seconds":1e400}}"#);
    assert_validation_failed(&app, &body, "ttl_seconds").await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_field_is_a_validation_failure_naming_it() {
    let app = spawn_app().await;
    assert_validation_failed(&app, r#"{"secret_key_id":"openai-prod","colour":"red"}"#, "colour").await;
    // A typo of a real field must not be silently ignored either.
    assert_validation_failed(&app, r#"{"secret_key_id":"openai-prod","ttl":60}"#, "ttl").await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_invalid_secret_key_id_is_a_validation_failure_naming_it() {
    let app = spawn_app().await;
    let too_long = "a".repeat(129);
    let cases = [
        json!({ "secret_key_id": too_long }),
        json!({ "secret_key_id": "clé-openai" }),
        json!({ "secret_key_id": "" }),
        json!({ "secret_key_id": "../etc/passwd" }),
        json!({ "secret_key_id": "openai prod" }),
        json!({ "secret_key_id": 42 }),
        json!({ "secret_key_id": null }),
        json!({ "ttl_seconds": 60 }),
    ];
    for body in cases {
        assert_validation_failed(&app, &body.to_string(), "secret_key_id").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_secret_key_id_of_exactly_128_allowed_characters_is_valid() {
    let app = spawn_app().await;
    let name = format!("{}.:_-", "A1z9".repeat(31));
    assert_eq!(name.len(), 128);
    // Valid, so the secret source is asked, and it has no such secret.
    assert_problem(app.issue(&json!({ "secret_key_id": name })).await, 422, "unknown_secret_key_id").await;
    // The file source names its files in the canonical (lower-case) spelling.
    app.add_secret(&name.to_ascii_lowercase(), "sk-boundary-value");
    assert_eq!(app.issue(&json!({ "secret_key_id": name })).await.status(), StatusCode::CREATED);
    app.shutdown().await;
}

#[tokio::test]
async fn metadata_over_the_limits_is_a_validation_failure_naming_metadata() {
    let app = spawn_app().await;
    let entries = |n: usize| (0..n).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>();
    let too_many = json!({ "secret_key_id": SECRET_KEY_ID, "metadata": entries(17) });
    assert_validation_failed(&app, &too_many.to_string(), "metadata").await;
    let long_value = json!({ "secret_key_id": SECRET_KEY_ID, "metadata": { "k": "v".repeat(257) } });
    assert_validation_failed(&app, &long_value.to_string(), "metadata").await;
    let long_key = json!({ "secret_key_id": SECRET_KEY_ID, "metadata": { "k".repeat(257): "v" } });
    assert_validation_failed(&app, &long_key.to_string(), "metadata").await;
    let not_a_string = json!({ "secret_key_id": SECRET_KEY_ID, "metadata": { "k": 1 } });
    assert_validation_failed(&app, &not_a_string.to_string(), "metadata").await;

    // At the limits it is fine.
    let full = json!({
        "secret_key_id": SECRET_KEY_ID,
        "metadata": entries(15).into_iter().chain([("k".repeat(256), json!("v".repeat(256)))]).collect::<serde_json::Map<_, _>>(),
    });
    assert_eq!(app.issue(&full).await.status(), StatusCode::CREATED);
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_secret_key_id_is_refused_with_unknown_secret_key_id() {
    let app = spawn_app().await;
    let response = app.issue(&json!({ "secret_key_id": "no-such-key" })).await;
    assert_problem(response, 422, "unknown_secret_key_id").await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_admin_revocation_body_follows_the_same_rules() {
    let app = spawn_app().await;
    let post = |body: &'static str, content_type: &'static str| {
        send(app.admin(Method::POST, "/v1/admin/revocations").header("content-type", content_type).body(body))
    };
    assert_problem(post("{", "application/json").await, 400, "invalid_request").await;
    assert_problem(post(r#"{"secret_key_id":"a"}"#, "text/plain").await, 400, "invalid_request").await;
    let problem = assert_problem(
        post(r#"{"secret_key_id":"a","colour":1}"#, "application/json").await,
        422,
        "validation_failed",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("colour"), "{problem}");
    let problem = assert_problem(
        post(r#"{"secret_key_id":"no/slash"}"#, "application/json").await,
        422,
        "validation_failed",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("secret_key_id"), "{problem}");

    let big: Value = json!({ "secret_key_id": "a".repeat(17 * 1024) });
    let response = send(app.admin(Method::POST, "/v1/admin/revocations").json(&big)).await;
    assert_problem(response, 413, "payload_too_large").await;
    app.shutdown().await;
}
