//! Hostile traffic on the session API: one name in many spellings, floods of issuances, oversized
//! metadata, and the admin surface kept off the public listener.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_tests::{SECRET_KEY_ID, assert_problem, header, secret, send, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_secret_key_id_in_any_case_is_one_name_for_issuance_listing_and_revocation() {
    let app = spawn_app().await;
    let shouted = app.issue_token("OPENAI-PROD", None).await;
    assert_eq!(shouted.body["secret_key_id"], SECRET_KEY_ID, "kept in its canonical spelling");
    let mixed = app.issue_token("OpenAI-Prod", None).await;
    let verified = app.verify(&mixed.token).await;
    assert_eq!(header(&verified, "x-sidekey-secret-key-id").as_deref(), Some(SECRET_KEY_ID));

    let listed: Value = send(app.admin(Method::GET, "/v1/admin/sessions?secret_key_id=openai-PROD"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2, "{listed}");

    // A rotation that names the key in yet another spelling reaches both sessions.
    let revoked = send(
        app.admin(Method::POST, "/v1/admin/revocations").json(&json!({ "secret_key_id": "Openai-PROD" })),
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(revoked.json::<Value>().await.unwrap()["revoked"], 2);
    for token in [&shouted.token, &mixed.token] {
        assert_eq!(app.verify(token).await.status(), StatusCode::UNAUTHORIZED);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn one_client_flooding_issuance_is_refused_with_retry_after() {
    let app = spawn_app_with(|config| config.http.issue_per_client_per_minute = 3).await;
    for _ in 0..3 {
        app.issue_token(SECRET_KEY_ID, None).await;
    }
    let refused = app.issue(&json!({ "secret_key_id": SECRET_KEY_ID })).await;
    let retry_after: u64 =
        header(&refused, "retry-after").expect("a Retry-After").parse().expect("whole seconds");
    assert!(
        (1..=20).contains(&retry_after),
        "one issuance fits again within a third of a minute: {retry_after}"
    );
    assert_problem(refused, 429, "rate_limited").await;
    // What the flooder already holds still works: only issuance is limited.
    assert_eq!(send(app.request(Method::GET, "/healthz", None)).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn metadata_is_bounded_in_bytes_not_only_in_entries() {
    let app = spawn_app_with(|config| config.session.max_metadata_bytes = 100).await;
    // Two entries well within the entry limits, but 4-byte characters: 2 × (1 + 30 × 4) bytes.
    let heavy =
        json!({ "secret_key_id": SECRET_KEY_ID, "metadata": { "a": "😀".repeat(30), "b": "😀".repeat(30) } });
    let problem = assert_problem(app.issue(&heavy).await, 422, "validation_failed").await;
    assert!(problem["detail"].as_str().unwrap().contains("100"), "names the bound: {problem}");
    let light = json!({ "secret_key_id": SECRET_KEY_ID, "metadata": { "a": "😀".repeat(24) } });
    assert_eq!(app.issue(&light).await.status(), StatusCode::CREATED, "97 bytes fit");
    app.shutdown().await;
}

#[tokio::test]
async fn with_an_admin_listener_the_admin_api_and_metrics_are_served_there_only() {
    let app = spawn_app_with(|config| config.admin.listen = Some("127.0.0.1:0".to_owned())).await;
    let admin_base = app.admin_base.clone().expect("an admin listener");
    let token = app.admin_token.clone().unwrap();
    let on_admin = |path: &str| app.client.get(format!("{admin_base}{path}")).bearer_auth(&token);

    assert_problem(send(app.admin(Method::GET, "/v1/admin/sessions")).await, 404, "not_found").await;
    assert_problem(send(app.request(Method::GET, "/metrics", None)).await, 404, "not_found").await;
    assert_eq!(send(on_admin("/v1/admin/sessions")).await.status(), StatusCode::OK);
    assert_eq!(send(on_admin("/metrics")).await.status(), StatusCode::OK);
    assert_eq!(send(on_admin("/healthz")).await.status(), StatusCode::OK);

    // The public routes are not on the admin listener, the fast-path verification included.
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    assert_problem(send(on_admin("/v1/auth/verify").bearer_auth(&issued.token)).await, 404, "not_found")
        .await;
    let issue_there =
        app.client.post(format!("{admin_base}/v1/sessions")).json(&json!({ "secret_key_id": SECRET_KEY_ID }));
    assert_problem(send(issue_there).await, 404, "not_found").await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_admin_token_shorter_than_32_bytes_is_refused_at_start_up() {
    let mut config = sidekey::Config { listen: "127.0.0.1:0".to_owned(), ..sidekey::Config::default() };
    config.admin.token = Some(secret(&"x".repeat(31)));
    let Err(error) = sidekey::spawn(&config, None).await else {
        panic!("a 31-byte admin token must be refused")
    };
    let message = format!("{error:#}");
    assert!(message.contains("admin.token") && message.contains("32"), "{message}");
    assert!(!message.contains(&"x".repeat(31)), "the token itself is never shown: {message}");

    config.admin.token = Some(secret(&"x".repeat(32)));
    sidekey::spawn(&config, None).await.expect("32 bytes are enough").shutdown().await.unwrap();
}

#[tokio::test]
async fn docs_off_serves_neither_the_page_nor_the_spec() {
    let app = spawn_app_with(|config| config.http.docs = false).await;
    for path in ["/docs", "/openapi.json"] {
        assert_problem(send(app.request(Method::GET, path, None)).await, 404, "not_found").await;
    }
    app.shutdown().await;
}
