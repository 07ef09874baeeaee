//! The Admin API: enabled only with an admin token; list, revoke one, revoke all of a key or a user.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sidekey_tests::{
    OTHER_SECRET_KEY_ID, REVOKED, SECRET_KEY_ID, TestApp, assert_invalid_token, assert_missing_token,
    assert_problem, send, spawn_app, spawn_app_with,
};

/// The admin routes, each with a body that would be valid (so only the credential decides).
fn admin_routes() -> [(Method, String, Option<Value>); 3] {
    [
        (Method::GET, "/v1/admin/sessions".to_owned(), None),
        (Method::DELETE, format!("/v1/admin/sessions/{}", uuid_of_no_session()), None),
        (Method::POST, "/v1/admin/revocations".to_owned(), Some(json!({ "secret_key_id": SECRET_KEY_ID }))),
    ]
}

fn uuid_of_no_session() -> &'static str {
    "0b6f3d8e-5c4a-4c1e-9f0a-2d7e8b9c1a3f"
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app.request(method, path, token);
    if let Some(body) = body {
        request = request.json(body);
    }
    send(request).await
}

async fn list(app: &TestApp, query: &str) -> Vec<Value> {
    let response = send(app.admin(Method::GET, &format!("/v1/admin/sessions{query}"))).await;
    assert_eq!(response.status(), StatusCode::OK, "list{query}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body.as_object().unwrap().keys().collect::<Vec<_>>(), ["sessions"], "{body}");
    body["sessions"].as_array().expect("a sessions array").clone()
}

fn ids(sessions: &[Value]) -> BTreeSet<String> {
    sessions.iter().map(|session| session["session_id"].as_str().unwrap().to_owned()).collect()
}

async fn revoke_matching(app: &TestApp, body: &Value) -> reqwest::Response {
    send(app.admin(Method::POST, "/v1/admin/revocations").json(body)).await
}

#[tokio::test]
async fn the_admin_api_is_not_found_when_no_admin_token_is_configured() {
    let app = spawn_app_with(|config| config.admin.token = None).await;
    let session = app.issue_token(SECRET_KEY_ID, None).await;
    for (method, path, body) in admin_routes() {
        for token in [None, Some("some-admin-guess"), Some(session.token.as_str())] {
            let response = call(&app, method.clone(), &path, body.as_ref(), token).await;
            assert_problem(response, 404, "not_found").await;
        }
    }
    // The sessions it could have revoked are untouched.
    assert_eq!(app.verify(&session.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_refuses_a_request_without_a_token_with_missing_token() {
    let app = spawn_app().await;
    for (method, path, body) in admin_routes() {
        assert_missing_token(call(&app, method, &path, body.as_ref(), None).await).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_refuses_a_wrong_admin_token_with_invalid_token() {
    let app = spawn_app().await;
    let admin = app.admin_token.clone().unwrap();
    let unknown = sidekey_domain::Token::generate().unwrap();
    for wrong in [format!("{admin}x"), admin[..admin.len() - 1].to_owned(), unknown.expose().to_owned()] {
        for (method, path, body) in admin_routes() {
            let response = call(&app, method, &path, body.as_ref(), Some(&wrong)).await;
            assert_invalid_token(response, "the admin token is not valid").await;
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_refuses_a_session_token_with_forbidden() {
    let app = spawn_app().await;
    let session = app.issue_token(SECRET_KEY_ID, None).await;
    for (method, path, body) in admin_routes() {
        let response = call(&app, method, &path, body.as_ref(), Some(&session.token)).await;
        assert_problem(response, 403, "forbidden").await;
    }
    // A refused revocation revoked nothing.
    assert_eq!(app.verify(&session.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn listing_sessions_filters_by_secret_key_id_subject_and_limit() {
    let app = spawn_app().await;
    let mut openai = BTreeSet::new();
    for _ in 0..3 {
        openai.insert(app.issue_token(SECRET_KEY_ID, None).await.session_id);
    }
    let mut anthropic = BTreeSet::new();
    for _ in 0..2 {
        anthropic.insert(app.issue_token(OTHER_SECRET_KEY_ID, None).await.session_id);
    }

    let all = list(&app, "").await;
    assert_eq!(ids(&all), openai.union(&anthropic).cloned().collect());
    assert_eq!(ids(&list(&app, &format!("?secret_key_id={SECRET_KEY_ID}")).await), openai);
    assert_eq!(ids(&list(&app, &format!("?secret_key_id={OTHER_SECRET_KEY_ID}")).await), anthropic);
    assert!(list(&app, "?secret_key_id=no-such-key").await.is_empty());
    // Without caller authentication no session has a subject.
    assert!(list(&app, "?subject=user-1").await.is_empty());
    assert!(list(&app, &format!("?secret_key_id={SECRET_KEY_ID}&subject=user-1")).await.is_empty());

    let two = list(&app, "?limit=2").await;
    assert_eq!(two.len(), 2);
    assert!(ids(&two).is_subset(&ids(&all)));
    let one = list(&app, &format!("?secret_key_id={OTHER_SECRET_KEY_ID}&limit=1")).await;
    assert_eq!(one.len(), 1);
    assert!(ids(&one).is_subset(&anthropic));
    assert_eq!(list(&app, "?limit=1000").await.len(), 5);
    app.shutdown().await;
}

#[tokio::test]
async fn listed_sessions_show_their_fields_but_never_a_token_or_a_real_key() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let response = send(app.admin(Method::GET, "/v1/admin/sessions")).await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    for secret in [issued.token.as_str(), &issued.token[4..], app.real_key.as_str()] {
        assert!(!text.contains(secret), "the admin list shows a secret: {text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    let session = &body["sessions"][0];
    let shown: Value = app.show(&issued.token).await.json().await.unwrap();
    assert_eq!(session["session_id"], shown["session_id"]);
    assert_eq!(session["expires_at"], shown["expires_at"]);
    assert_eq!(session["issued_at"], shown["issued_at"]);
    assert_eq!(session["secret_key_id"], SECRET_KEY_ID);
    assert!(session.get("token").is_none(), "{session}");
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_list_parameters_are_a_validation_failure_naming_them() {
    let app = spawn_app().await;
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=abc", "limit"),
        ("?secret_key_id=bad%20name", "secret_key_id"),
    ] {
        let response = send(app.admin(Method::GET, &format!("/v1/admin/sessions{query}"))).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert!(problem["detail"].as_str().unwrap().contains(field), "{query}: {problem}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_a_session_by_id_answers_204_and_refuses_its_token() {
    let app = spawn_app().await;
    let target = app.issue_token(SECRET_KEY_ID, None).await;
    let bystander = app.issue_token(SECRET_KEY_ID, None).await;

    let path = format!("/v1/admin/sessions/{}", target.session_id);
    let response = send(app.admin(Method::DELETE, &path)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());

    assert_invalid_token(app.verify(&target.token).await, REVOKED).await;
    assert_eq!(app.verify(&bystander.token).await.status(), StatusCode::OK);
    assert_eq!(ids(&list(&app, "").await), BTreeSet::from([bystander.session_id]));
    // Gone now: a second delete finds nothing.
    assert_problem(send(app.admin(Method::DELETE, &path)).await, 404, "not_found").await;
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_an_unknown_or_malformed_session_id_is_not_found() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for id in [uuid_of_no_session(), "not-a-uuid", "12345", &issued.token] {
        let response = send(app.admin(Method::DELETE, &format!("/v1/admin/sessions/{id}"))).await;
        let problem = assert_problem(response, 404, "not_found").await;
        assert!(!problem.to_string().contains(&issued.token), "{problem}");
    }
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn revoking_by_secret_key_id_reports_the_exact_count_and_spares_other_keys() {
    let app = spawn_app().await;
    let mut rotated = Vec::new();
    for _ in 0..3 {
        rotated.push(app.issue_token(SECRET_KEY_ID, None).await);
    }
    let kept =
        [app.issue_token(OTHER_SECRET_KEY_ID, None).await, app.issue_token(OTHER_SECRET_KEY_ID, None).await];
    // One of them is already revoked: it must not be counted again.
    assert_eq!(app.revoke(&rotated[0].token).await.status(), StatusCode::NO_CONTENT);

    let response = revoke_matching(&app, &json!({ "secret_key_id": SECRET_KEY_ID })).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "revoked": 2 }));

    for issued in &rotated {
        assert_invalid_token(app.verify(&issued.token).await, REVOKED).await;
    }
    for issued in &kept {
        assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    }
    // Nothing is left to revoke, and new sessions for the rotated key work again.
    let again = revoke_matching(&app, &json!({ "secret_key_id": SECRET_KEY_ID })).await;
    assert_eq!(again.json::<Value>().await.unwrap(), json!({ "revoked": 0 }));
    let fresh = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.verify(&fresh.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn revoking_by_subject_revokes_only_that_subjects_sessions() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    // Without caller authentication sessions have no subject, so a ban matches none of them.
    let response = revoke_matching(&app, &json!({ "subject": "user-1" })).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "revoked": 0 }));
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_revocation_naming_both_or_neither_field_is_a_validation_failure() {
    let app = spawn_app().await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    for body in [json!({ "secret_key_id": SECRET_KEY_ID, "subject": "user-1" }), json!({})] {
        let problem = assert_problem(revoke_matching(&app, &body).await, 422, "validation_failed").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("secret_key_id") && detail.contains("subject"), "{body}: {detail}");
    }
    // A field is absent or a string: the document's `oneOf` has no room for null.
    for (body, field) in [
        (json!({ "secret_key_id": null, "subject": null }), "secret_key_id"),
        (json!({ "secret_key_id": SECRET_KEY_ID, "subject": null }), "subject"),
    ] {
        let problem = assert_problem(revoke_matching(&app, &body).await, 422, "validation_failed").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{body}: {detail}");
    }
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK, "a refused revocation revoked");
    app.shutdown().await;
}
