//! Caller authentication over real HTTP: who may create sessions, for whom, and for how long.
//!
//! The JWT tests mint HS256 tokens (the asymmetric algorithms and the JWKS are covered against the
//! verifier itself in `adapters/tests/identity_jwt.rs`). The directory tests need PostgreSQL at
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), skipped without it except
//! under `CI=true`; each creates Better Auth's tables in a fresh schema and drops it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::Mac as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use sidekey::config::AuthMode;
use sidekey_test_support::{database_url, random_hex};
use sidekey_tests::{SECRET_KEY_ID, TestApp, assert_problem, header, secret, spawn_app_with};

const HS256_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes-for-tests";
const ISSUER: &str = "http://127.0.0.1:3000";
const BETTER_AUTH_SECRET: &str = "better-auth-secret-for-the-e2e-tests";

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An HS256 JWT as an app that mints its own would: `sub`, `email`, `iss`, `aud`, `iat`, `exp`.
fn jwt(sub: &str, email: &str, secret: &str, expires_in: i64) -> String {
    let now = now_seconds();
    let claims = json!({
        "sub": sub, "email": email, "iss": ISSUER, "aud": ISSUER,
        "iat": now, "exp": now.saturating_add_signed(expires_in),
    });
    let mut jwt_header = Header::new(Algorithm::HS256);
    jwt_header.typ = None;
    jsonwebtoken::encode(&jwt_header, &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

async fn jwt_app(directory: Option<(&str, &str)>) -> TestApp {
    jwt_app_with(directory, |_| {}).await
}

async fn jwt_app_with(directory: Option<(&str, &str)>, tweak: impl FnOnce(&mut sidekey::Config)) -> TestApp {
    spawn_app_with(|config| {
        config.auth.mode = AuthMode::Jwt;
        config.auth.jwt.hs256_secret = Some(secret(HS256_SECRET));
        config.auth.jwt.issuer = Some(ISSUER.to_owned());
        config.auth.jwt.audience = Some(ISSUER.to_owned());
        if let Some((url, schema)) = directory {
            config.auth.jwt.better_auth_secret = Some(secret(BETTER_AUTH_SECRET));
            config.directory.url = Some(secret(url));
            config.directory.schema = Some(schema.to_owned());
            config.directory.cascade_check_seconds = 1;
            config.directory.connect_timeout_ms = 500;
            config.directory.query_timeout_ms = 500;
        }
        tweak(config);
    })
    .await
}

async fn issue_as(app: &TestApp, credential: Option<&str>) -> reqwest::Response {
    let mut request = app.request(Method::POST, "/v1/sessions", credential);
    request = request.json(&json!({ "secret_key_id": SECRET_KEY_ID }));
    request.send().await.unwrap()
}

#[tokio::test]
async fn with_jwt_mode_only_a_valid_caller_jwt_creates_a_session_and_its_subject_reaches_verify() {
    let app = jwt_app(None).await;

    let missing = issue_as(&app, None).await;
    assert_problem(missing, 401, "missing_token").await;

    let forged =
        issue_as(&app, Some(&jwt("user_1", "ada@example.com", "some-other-secret-of-32-bytes-or-more", 600)))
            .await;
    assert!(header(&forged, "www-authenticate").is_some_and(|challenge| challenge.contains("invalid_token")));
    assert_problem(forged, 401, "invalid_caller").await;

    let expired = issue_as(&app, Some(&jwt("user_1", "ada@example.com", HS256_SECRET, -120))).await;
    let body = assert_problem(expired, 401, "invalid_caller").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");

    let response = issue_as(&app, Some(&jwt("user_1", "ada@example.com", HS256_SECRET, 600))).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["subject"], "user_1");
    let verified = app.verify(body["token"].as_str().unwrap()).await;
    assert_eq!(verified.status(), 200);
    assert_eq!(header(&verified, "x-sidekey-subject").as_deref(), Some("user_1"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_cannot_forge_the_reserved_caller_session_metadata() {
    let app = jwt_app(None).await;
    let response = app
        .request(Method::POST, "/v1/sessions", Some(&jwt("user_1", "ada@example.com", HS256_SECRET, 600)))
        .json(&json!({ "secret_key_id": SECRET_KEY_ID, "metadata": { "sidekey:caller_session": "x" } }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "validation_failed").await;
    app.shutdown().await;
}

// The user directory: Better Auth's tables in PostgreSQL.

/// A fresh schema holding Better Auth's `user` and `session` tables; dropped by [`Directory::drop_schema`].
struct Directory {
    client: tokio_postgres::Client,
    url: String,
    schema: String,
}

impl Directory {
    async fn new() -> Option<Self> {
        let url = database_url().await?;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| panic!("PostgreSQL answered the check, then refused: {error}"));
        tokio::spawn(connection);
        let schema = format!("sidekey_e2e_{}", random_hex(12));
        client
            .batch_execute(&format!(
                r#"CREATE SCHEMA {schema};
                SET search_path TO {schema};
                CREATE TABLE "user" (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE,
                  "emailVerified" boolean NOT NULL DEFAULT false, image text,
                  "createdAt" timestamp NOT NULL DEFAULT now(), "updatedAt" timestamp NOT NULL DEFAULT now());
                CREATE TABLE "session" (id text PRIMARY KEY, "expiresAt" timestamp NOT NULL,
                  token text NOT NULL UNIQUE, "createdAt" timestamp NOT NULL DEFAULT now(),
                  "updatedAt" timestamp NOT NULL DEFAULT now(), "ipAddress" text, "userAgent" text,
                  "userId" text NOT NULL REFERENCES "user"(id) ON DELETE CASCADE);"#
            ))
            .await
            .unwrap();
        Some(Self { client, url, schema })
    }

    async fn add_user(&self, id: &str, email: &str) {
        self.client
            .execute(
                &format!(r#"INSERT INTO {}."user" (id, name, email) VALUES ($1, $1, $2)"#, self.schema),
                &[&id, &email],
            )
            .await
            .unwrap();
    }

    /// A sign-in session expiring `expires_in` seconds from now (timestamps in UTC, as Better Auth writes
    /// them from a process in UTC).
    async fn add_session(&self, id: &str, user_id: &str, token: &str, expires_in: i64) {
        self.client
            .execute(
                &format!(
                    r#"INSERT INTO {}."session" (id, "expiresAt", token, "userId")
                       VALUES ($1, (now() AT TIME ZONE 'UTC') + make_interval(secs => $4::float8), $2, $3)"#,
                    self.schema
                ),
                &[&id, &token, &user_id, &(expires_in as f64)],
            )
            .await
            .unwrap();
    }

    async fn delete_session(&self, id: &str) {
        self.client
            .execute(&format!(r#"DELETE FROM {}."session" WHERE id = $1"#, self.schema), &[&id])
            .await
            .unwrap();
    }

    async fn drop_schema(self) {
        self.client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema)).await.unwrap();
    }
}

/// Better Auth's session cookie value: the token, a dot, base64 of HMAC-SHA256(token), URL-encoded.
fn session_cookie(token: &str, secret: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(token.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let signed = format!("{token}.{signature}");
    signed.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

#[tokio::test]
async fn with_a_directory_the_caller_must_be_a_user_with_an_active_session_who_becomes_the_subject() {
    let Some(directory) = Directory::new().await else { return };
    let app = jwt_app(Some((&directory.url, &directory.schema))).await;

    let stranger = issue_as(&app, Some(&jwt("idp-1", "nobody@example.com", HS256_SECRET, 600))).await;
    assert_problem(stranger, 404, "user_not_found").await;

    directory.add_user("user_ada", "ada@example.com").await;
    let signed_out = issue_as(&app, Some(&jwt("idp-1", "ADA@example.com", HS256_SECRET, 600))).await;
    assert_problem(signed_out, 404, "no_active_session").await;

    directory.add_session("ba_old", "user_ada", &random_hex(32), -60).await;
    let expired_only = issue_as(&app, Some(&jwt("idp-1", "ada@example.com", HS256_SECRET, 600))).await;
    assert_problem(expired_only, 404, "no_active_session").await;

    directory.add_session("ba_live", "user_ada", &random_hex(32), 3600).await;
    let response = issue_as(&app, Some(&jwt("idp-1", "ada@example.com", HS256_SECRET, 600))).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["subject"], "user_ada", "the directory's user id, not the JWT's sub");
    app.shutdown().await;
    directory.drop_schema().await;
}

#[tokio::test]
async fn a_better_auth_session_cookie_or_bearer_session_token_creates_a_session_that_ends_with_it() {
    let Some(directory) = Directory::new().await else { return };
    let app = jwt_app(Some((&directory.url, &directory.schema))).await;
    directory.add_user("user_bob", "bob@example.com").await;
    let token = random_hex(32);
    directory.add_session("ba_bob", "user_bob", &token, 3600).await;

    // The cookie, signed as Better Auth signs it.
    let response = app
        .request(Method::POST, "/v1/sessions", None)
        .header(
            "cookie",
            format!("theme=dark; better-auth.session_token={}", session_cookie(&token, BETTER_AUTH_SECRET)),
        )
        .json(&json!({ "secret_key_id": SECRET_KEY_ID }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let from_cookie: Value = response.json().await.unwrap();
    assert_eq!(from_cookie["subject"], "user_bob");

    // A cookie signed with another secret is refused without being looked up.
    let response = app
        .request(Method::POST, "/v1/sessions", None)
        .header(
            "cookie",
            format!("better-auth.session_token={}", session_cookie(&token, "not-the-secret-at-all")),
        )
        .json(&json!({ "secret_key_id": SECRET_KEY_ID }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "invalid_caller").await;

    // The bearer plugin's form: the raw session token.
    let response = issue_as(&app, Some(&token)).await;
    assert_eq!(response.status(), 201);
    let from_bearer: Value = response.json().await.unwrap();
    assert_eq!(from_bearer["subject"], "user_bob");
    let unknown = issue_as(&app, Some(&random_hex(32))).await;
    assert_problem(unknown, 401, "invalid_caller").await;

    // The cascade: signing out (deleting the session row) ends both sidekey sessions within the
    // configured bound (1 s here).
    for body in [&from_cookie, &from_bearer] {
        assert_eq!(app.verify(body["token"].as_str().unwrap()).await.status(), 200);
    }
    directory.delete_session("ba_bob").await;
    let started = Instant::now();
    for body in [&from_cookie, &from_bearer] {
        loop {
            let status = app.verify(body["token"].as_str().unwrap()).await.status();
            if status == 401 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "still verifying after the sign-in session ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let took = started.elapsed();
    assert!(took <= Duration::from_millis(1500), "the cascade took {took:?}, more than the 1 s bound");
    app.shutdown().await;
    directory.drop_schema().await;
}

#[tokio::test]
async fn with_the_directory_unreachable_issuance_answers_503_directory_unavailable_in_bounded_time() {
    let app = jwt_app(Some(("postgres://postgres:hunter2@127.0.0.1:1/postgres", "public"))).await;
    let started = Instant::now();
    let response = issue_as(&app, Some(&jwt("idp-1", "ada@example.com", HS256_SECRET, 600))).await;
    let took = started.elapsed();
    assert!(header(&response, "retry-after").is_some());
    let body = assert_problem(response, 503, "directory_unavailable").await;
    assert!(!body.to_string().contains("hunter2"));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let ready = app.request(Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    app.shutdown().await;
}

#[tokio::test]
async fn a_subject_holds_at_most_its_live_sessions_and_gets_one_back_by_revoking() {
    let app = jwt_app_with(None, |config| config.session.max_live_per_subject = Some(2)).await;
    let ada = jwt("user_ada", "ada@example.com", HS256_SECRET, 600);
    let first: Value = issue_as(&app, Some(&ada)).await.json().await.unwrap();
    assert_eq!(issue_as(&app, Some(&ada)).await.status(), 201);
    let refused = assert_problem(issue_as(&app, Some(&ada)).await, 429, "quota_exceeded").await;
    assert!(
        refused["detail"].as_str().unwrap().contains("DELETE /v1/session"),
        "says how to free one: {refused}"
    );
    let grace = jwt("user_grace", "grace@example.com", HS256_SECRET, 600);
    assert_eq!(issue_as(&app, Some(&grace)).await.status(), 201, "another subject is not affected");

    assert_eq!(app.revoke(first["token"].as_str().unwrap()).await.status(), 204);
    assert_eq!(issue_as(&app, Some(&ada)).await.status(), 201, "the revoked session's place is free again");
    assert_problem(issue_as(&app, Some(&ada)).await, 429, "quota_exceeded").await;
    app.shutdown().await;
}
