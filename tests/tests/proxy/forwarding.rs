//! What crosses the proxy: the real key (and never the token), the request, the user context; and what
//! is refused before the upstream hears of it.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sidekey_tests::{
    OTHER_SECRET_KEY_ID, REVOKED, SECRET_KEY_ID, assert_invalid_token, assert_missing_token, assert_problem,
    header, send,
};

use super::upstream::FakeUpstream;
use super::{app_with, upstream_config};

#[tokio::test]
async fn the_real_key_arrives_as_a_bearer_credential_and_the_token_nowhere() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let response = send(
        app.request(Method::POST, "/v1/proxy/openai/v1/chat/completions", Some(&issued.token))
            .header("content-type", "application/json")
            .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello, world!");

    let seen = upstream.only_request();
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {}", app.real_key).as_str()));
    assert!(!seen.contains(&issued.token), "the token reached the upstream: {seen:#?}");
    assert!(!seen.contains("skt_"), "something token-like reached the upstream: {seen:#?}");
    assert!(!seen.contains(&app.other_real_key), "another key reached the upstream: {seen:#?}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_real_key_arrives_in_a_custom_header_bare_or_in_the_query_as_configured() {
    let upstream = FakeUpstream::start().await;
    let mut custom = upstream_config("custom", &upstream.url("/custom"), &[SECRET_KEY_ID]);
    custom.credential_header = "x-api-key".to_owned();
    custom.credential_scheme = String::new();
    let mut bare = upstream_config("bare", &upstream.url("/bare"), &[SECRET_KEY_ID]);
    bare.credential_scheme = String::new();
    let mut scheme = upstream_config("scheme", &upstream.url("/scheme"), &[SECRET_KEY_ID]);
    scheme.credential_scheme = "Token".to_owned();
    let mut query = upstream_config("query", &upstream.url("/query"), &[SECRET_KEY_ID]);
    query.credential_query = Some("key".to_owned());
    let app = app_with(vec![custom, bare, scheme, query]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    for name in ["custom", "bare", "scheme", "query"] {
        // The client also sends a credential parameter of its own: it must not survive.
        let path = format!("/v1/proxy/{name}/models?alt=sse&key=client-chosen");
        let response = send(
            app.request(Method::GET, &path, Some(&issued.token)).header("x-api-key", issued.token.as_str()),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 4);
    let key = app.real_key.as_str();

    let custom = &seen[0];
    assert_eq!(custom.header("x-api-key"), Some(key));
    assert_eq!(custom.header("authorization"), None);
    let bare = &seen[1];
    assert_eq!(bare.header("authorization"), Some(key));
    let scheme = &seen[2];
    assert_eq!(scheme.header("authorization"), Some(format!("Token {key}").as_str()));
    let query = &seen[3];
    assert_eq!(query.target, format!("/query/models?alt=sse&key={key}"));
    assert_eq!(query.header("authorization"), None);

    // The client's token was in `Authorization` and in `x-api-key`, which is no credential header for
    // three of these upstreams: the token is scrubbed from every header all the same.
    for request in &seen {
        assert!(!request.contains(&issued.token), "the token reached the upstream: {request:#?}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_is_never_sent_to_an_upstream_that_does_not_allow_it() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("anthropic", &upstream.url(""), &["anthropic-*"])]).await;
    let openai = app.issue_token(SECRET_KEY_ID, None).await;

    for method in [Method::GET, Method::POST, Method::DELETE] {
        let response =
            send(app.request(method, "/v1/proxy/anthropic/v1/messages", Some(&openai.token))).await;
        let problem = assert_problem(response, 403, "forbidden").await;
        assert!(!problem.to_string().contains(&app.real_key), "{problem}");
    }
    assert!(upstream.seen().is_empty(), "the upstream was called: {:#?}", upstream.seen());

    // The key it does allow goes through, and only that key.
    let anthropic = app.issue_token(OTHER_SECRET_KEY_ID, None).await;
    let response =
        send(app.request(Method::GET, "/v1/proxy/anthropic/v1/models", Some(&anthropic.token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.only_request();
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {}", app.other_real_key).as_str()));
    assert!(!seen.contains(&app.real_key));
    app.shutdown().await;
}

#[tokio::test]
async fn exact_names_and_trailing_star_patterns_decide_which_keys_go_where() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![
        upstream_config("exact", &upstream.url("/exact"), &[SECRET_KEY_ID]),
        upstream_config("pattern", &upstream.url("/pattern"), &["openai-*"]),
        upstream_config("everything", &upstream.url("/everything"), &["*"]),
    ])
    .await;
    app.add_secret("openai-staging", "sk-staging-0123456789");
    let prod = app.issue_token(SECRET_KEY_ID, None).await;
    let staging = app.issue_token("openai-staging", None).await;
    let anthropic = app.issue_token(OTHER_SECRET_KEY_ID, None).await;

    let expectations = [
        ("exact", &prod, 200),
        ("exact", &staging, 403),
        ("exact", &anthropic, 403),
        ("pattern", &prod, 200),
        ("pattern", &staging, 200),
        ("pattern", &anthropic, 403),
        ("everything", &anthropic, 200),
    ];
    for (name, issued, status) in expectations {
        let response =
            send(app.request(Method::GET, &format!("/v1/proxy/{name}/ping"), Some(&issued.token))).await;
        assert_eq!(response.status().as_u16(), status, "{name} with {}", issued.body["secret_key_id"]);
    }
    let targets: Vec<String> = upstream.seen().into_iter().map(|seen| seen.target).collect();
    assert_eq!(targets, ["/exact/ping", "/pattern/ping", "/pattern/ping", "/everything/ping"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_name_in_another_case_is_the_same_key_for_allowlists_and_revocation() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![
        upstream_config("exact", &upstream.url("/exact"), &["OpenAI-Prod"]),
        upstream_config("pattern", &upstream.url("/pattern"), &["OPENAI-*"]),
    ])
    .await;
    let shouted = app.issue_token("OPENAI-PROD", None).await;
    for name in ["exact", "pattern"] {
        let path = format!("/v1/proxy/{name}/ping");
        assert_eq!(
            send(app.request(Method::GET, &path, Some(&shouted.token))).await.status(),
            StatusCode::OK
        );
    }
    for seen in upstream.seen() {
        assert_eq!(seen.header("authorization"), Some(format!("Bearer {}", app.real_key).as_str()));
    }

    // Revoking the key by its canonical name reaches the session issued under another spelling.
    let revoked = send(
        app.admin(Method::POST, "/v1/admin/revocations")
            .json(&serde_json::json!({ "secret_key_id": SECRET_KEY_ID })),
    )
    .await;
    assert_eq!(revoked.json::<Value>().await.unwrap()["revoked"], 1);
    let refused = send(app.request(Method::GET, "/v1/proxy/pattern/ping", Some(&shouted.token))).await;
    assert_invalid_token(refused, REVOKED).await;
    assert_eq!(upstream.seen().len(), 2, "nothing more reached the upstream");
    app.shutdown().await;
}

#[tokio::test]
async fn method_path_query_and_body_are_forwarded_under_the_base_path() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("api", &upstream.url("/base/"), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = send(
            app.request(
                method.clone(),
                "/v1/proxy/api/files/a%20b/c?limit=10&q=two%20words&x=",
                Some(&issued.token),
            )
            .body(format!("body of {method}")),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{method}");
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 5);
    for (request, method) in seen.iter().zip(["GET", "POST", "PUT", "PATCH", "DELETE"]) {
        assert_eq!(request.method, method);
        assert_eq!(request.target, "/base/files/a%20b/c?limit=10&q=two%20words&x=");
        assert_eq!(String::from_utf8_lossy(&request.body), format!("body of {method}"));
    }

    // No path below the upstream is the base path itself.
    let response = send(app.request(Method::GET, "/v1/proxy/api", Some(&issued.token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(upstream.seen().last().unwrap().target, "/base");
    app.shutdown().await;
}

#[tokio::test]
async fn dot_segments_cannot_climb_out_of_the_base_path() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("api", &upstream.url("/base"), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for path in ["/v1/proxy/api/%2e%2e/admin", "/v1/proxy/api/a/%2E%2E/%2e%2e/admin", "/v1/proxy/api/./x"] {
        // reqwest would resolve literal dot segments itself; send the bytes as written.
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            issued.token
        );
        let response = sidekey_tests::raw_http(app.addr, request.as_bytes()).await;
        assert_eq!(response.status, 400, "{path}: {}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.json()["code"], "invalid_path");
    }
    assert!(upstream.seen().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_the_user_context_added() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("api", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let request = format!(
        "POST /v1/proxy/api/echo HTTP/1.1\r\nHost: sidekey.example\r\nAuthorization: Bearer {}\r\n\
         Connection: close, x-client-hop\r\nX-Client-Hop: must not cross\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Cookie: better-auth.session_token=abc\r\nX-Sidekey-Subject: admin\r\nX-Sidekey-Session-Id: forged\r\n\
         X-Forwarded-For: 203.0.113.9\r\nX-Custom: kept\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        issued.token
    );
    let response = sidekey_tests::raw_http(app.addr, request.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));

    let seen = upstream.only_request();
    for gone in
        ["x-client-hop", "keep-alive", "te", "upgrade", "proxy-authorization", "cookie", "transfer-encoding"]
    {
        assert!(seen.header_values(gone).is_empty(), "{gone} crossed: {seen:#?}");
    }
    // The upstream connection is sidekey's own: whatever Connection header it carries is not the client's.
    assert!(
        seen.header_values("connection").iter().all(|value| !value.contains("x-client-hop")),
        "{seen:#?}"
    );
    assert_eq!(seen.header("host"), Some(upstream.addr.to_string().as_str()));
    assert_eq!(seen.header("x-sidekey-session-id"), Some(issued.session_id.as_str()));
    assert_eq!(seen.header("x-sidekey-subject"), None, "a session without a subject sends none");
    // The client is no trusted proxy: its own X-Forwarded-For is replaced (see `trusted_proxies`).
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("content-type"), Some("text/plain"));
    assert_eq!(seen.body, b"hello");

    // The upstream's hop-by-hop and origin-policy headers do not reach the client; its own do.
    assert_eq!(response.header("x-upstream-header"), Some("kept"));
    for gone in ["x-upstream-hop", "keep-alive", "access-control-allow-origin", "alt-svc"] {
        assert_eq!(response.header(gone), None, "{gone} reached the client: {:?}", response.headers);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn static_headers_are_added_and_replace_the_clients() {
    let upstream = FakeUpstream::start().await;
    let mut config = upstream_config("anthropic", &upstream.url(""), &[SECRET_KEY_ID]);
    config.credential_header = "x-api-key".to_owned();
    config.credential_scheme = String::new();
    config.headers.insert("anthropic-version".to_owned(), "2023-06-01".to_owned());
    let app = app_with(vec![config]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let response = send(
        app.request(Method::POST, "/v1/proxy/anthropic/v1/messages", Some(&issued.token))
            .header("anthropic-version", "1999-01-01")
            .body("{}"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.only_request();
    assert_eq!(seen.header_values("anthropic-version"), ["2023-06-01"]);
    assert_eq!(seen.header("x-api-key"), Some(app.real_key.as_str()));
    assert_eq!(seen.header("authorization"), None);
    app.shutdown().await;
}

#[tokio::test]
async fn chatkit_routes_reach_the_upstream_named_chatkit() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("chatkit", &upstream.url("/ck"), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for path in ["/v1/chatkit", "/v1/chatkit/threads/t_1?order=desc"] {
        let response = send(app.request(Method::POST, path, Some(&issued.token)).body("{}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let targets: Vec<String> = upstream.seen().into_iter().map(|seen| seen.target).collect();
    assert_eq!(targets, ["/ck", "/ck/threads/t_1?order=desc"]);
    assert_eq!(upstream.seen()[0].header("authorization"), Some(format!("Bearer {}", app.real_key).as_str()));

    // The same upstream is reachable by name too.
    let response = send(app.request(Method::GET, "/v1/proxy/chatkit/threads", Some(&issued.token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_valid_token_nothing_is_forwarded() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &["*"])]).await;
    for path in ["/v1/proxy/openai/v1/models", "/v1/proxy/unknown/v1/models", "/v1/chatkit/x"] {
        assert_missing_token(send(app.request(Method::GET, path, None)).await).await;
        let mangled = "skt_0000000000000000000000000000000000000000000000000";
        let response = send(app.request(Method::POST, path, Some(mangled))).await;
        assert_invalid_token(response, sidekey_tests::MALFORMED).await;
    }
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.revoke(&issued.token).await.status(), StatusCode::NO_CONTENT);
    let response = send(app.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token))).await;
    assert_invalid_token(response, sidekey_tests::REVOKED).await;
    assert!(upstream.seen().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_upstream_is_not_found() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &["*"])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for path in ["/v1/proxy/nope/v1/models", "/v1/proxy/nope", "/v1/proxy/", "/v1/chatkit/threads"] {
        let response = send(app.request(Method::GET, path, Some(&issued.token))).await;
        assert_problem(response, 404, "not_found").await;
    }
    assert!(upstream.seen().is_empty());

    // Without any upstream configured, the routes still answer with the contract's errors.
    let bare = sidekey_tests::spawn_app().await;
    let issued = bare.issue_token(SECRET_KEY_ID, None).await;
    let response = send(bare.request(Method::GET, "/v1/proxy/openai/v1/models", Some(&issued.token))).await;
    assert_problem(response, 404, "not_found").await;
    bare.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_upstreams_own_errors_pass_through_unchanged() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for code in [400u16, 401, 404, 429, 500, 502, 503] {
        let response =
            send(app.request(Method::POST, &format!("/v1/proxy/openai/status/{code}"), Some(&issued.token)))
                .await;
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
        assert_eq!(header(&response, "x-upstream-header").as_deref(), Some("kept"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], format!("the upstream says {code}"));
    }
    app.shutdown().await;
}

#[tokio::test]
async fn proxied_requests_are_counted_by_upstream_and_status_class() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("metered", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    send(app.request(Method::GET, "/v1/proxy/metered/ok", Some(&issued.token))).await;
    send(app.request(Method::GET, "/v1/proxy/metered/status/503", Some(&issued.token))).await;
    let metrics = send(app.request(Method::GET, "/metrics", None)).await.text().await.unwrap();
    for needle in [r#"status="2xx""#, r#"status="5xx""#] {
        let found = metrics.lines().any(|line| {
            line.starts_with("sidekey_proxy_requests_total{")
                && line.contains(r#"upstream="metered""#)
                && line.contains(needle)
        });
        assert!(found, "no sidekey_proxy_requests_total line for metered with {needle}:\n{metrics}");
    }
    assert!(
        metrics.lines().any(|line| line.starts_with("sidekey_proxy_upstream_duration_seconds")
            && line.contains(r#"upstream="metered""#)),
        "{metrics}"
    );
    app.shutdown().await;
}
