//! sidekey's end-to-end tests: the real server on `127.0.0.1:0`, driven over real HTTP.
//!
//! This library holds what every test binary shares; the tests themselves live in `tests/`.
//!
//! # Layout
//! - [`spawn_app`] / [`spawn_app_with`] / [`spawn_app_on`]: start a server with its own secret directory
//!   and admin token (on the system clock, or on one the test moves).
//! - [`TestApp`]: the running server, an HTTP client, and request shortcuts.
//! - [`assert_problem`], [`assert_invalid_token`], [`assert_missing_token`]: the contract's error shapes.
//! - [`raw_http`]: one request written byte for byte over TCP, for what reqwest cannot send (a chunked
//!   body without the `stream` feature).
//! - [`spawn_app_on`]: [`spawn_app_with`] on a clock the test moves (e.g. past midnight UTC).
//! - [`redis_url`], [`RedisPrefix`]: the Redis that tests of several instances share, and one test's
//!   key prefix there, deleted when the test ends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sidekey::config::Secret;
use sidekey::{Config, RunningServer};
use sidekey_application::Clock;
use sidekey_local::SystemClock;
pub use sidekey_test_support::redis_url;
use sidekey_test_support::{TempDir, random_hex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The secret every app has: its real key is [`TestApp::real_key`].
pub const SECRET_KEY_ID: &str = "openai-prod";
/// A second secret every app has: its real key is [`TestApp::other_real_key`].
pub const OTHER_SECRET_KEY_ID: &str = "anthropic-prod";

/// The media type of every error body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `error_description` of a token refused without touching the store.
pub const MALFORMED: &str = "the token is malformed";
/// The `error_description` of a well-formed token that was never issued here.
pub const UNKNOWN: &str = "the token is unknown";
/// The `error_description` of a token whose session expired.
pub const EXPIRED: &str = "the token has expired";
/// The `error_description` of a token whose session was revoked.
pub const REVOKED: &str = "the token was revoked";

/// How long any single request may take before the test fails instead of hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sidekey with its own secret directory, admin token and HTTP client.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client that talks to it directly (never through a proxy from the environment).
    pub client: reqwest::Client,
    /// The configured admin token, when the admin API is enabled.
    pub admin_token: Option<String>,
    /// The admin listener's base URL, when `admin.listen` is set.
    pub admin_base: Option<String>,
    /// The real key of [`SECRET_KEY_ID`]: `sk-live-` and random hex, so it cannot appear by chance.
    pub real_key: String,
    /// The real key of [`OTHER_SECRET_KEY_ID`].
    pub other_real_key: String,
    /// Removed when the app is dropped.
    secrets_dir: TempDir,
    server: Option<RunningServer>,
}

/// A token just issued, with the response body it came in.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The session token.
    pub token: String,
    /// The session's id.
    pub session_id: String,
    /// The whole 201 body.
    pub body: Value,
}

/// The 12-hex-character fingerprint the audit log shows for `token`.
///
/// # Panics
/// When `token` is not a well-formed session token.
pub fn fingerprint(token: &str) -> String {
    sidekey_domain::Token::parse(token).expect("a well-formed token").digest().fingerprint().to_string()
}

/// Starts a server with the test defaults: port 0, a fresh secret directory holding [`SECRET_KEY_ID`]
/// and [`OTHER_SECRET_KEY_ID`], and a random admin token.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`], with `tweak` applied to the configuration last (e.g. `config.admin.token = None`).
///
/// # Panics
/// When the server does not start.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(Arc::new(SystemClock), tweak).await
}

/// [`spawn_app_with`], on `clock`: a [`ManualClock`](sidekey_test_support::ManualClock) makes the
/// server's sessions expire when the test moves it, not when the wall clock gets there.
///
/// # Panics
/// When the server does not start.
pub async fn spawn_app_on(clock: Arc<dyn Clock>, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let secrets_dir = TempDir::new("e2e-secrets");
    let real_key = format!("sk-live-{}", random_hex(40));
    let other_real_key = format!("sk-ant-live-{}", random_hex(40));
    write_secret(secrets_dir.path(), SECRET_KEY_ID, &real_key);
    write_secret(secrets_dir.path(), OTHER_SECRET_KEY_ID, &other_real_key);

    let mut config = Config { listen: "127.0.0.1:0".to_owned(), ..Config::default() };
    config.secrets.source = format!("file:{}", secrets_dir.path().display()).parse().expect("a file: source");
    config.admin.token = Some(secret(&format!("admin-{}", random_hex(32))));
    tweak(&mut config);

    let metrics = sidekey::telemetry::install_metrics();
    let server = sidekey::spawn_on(&config, Some(metrics), clock).await.expect("the server starts");
    let client =
        reqwest::Client::builder().no_proxy().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client");
    TestApp {
        addr: server.addr,
        base: server.url(),
        client,
        admin_token: config.admin.token.as_ref().map(|token| token.expose().to_owned()),
        admin_base: server.admin_addr.map(|addr| format!("http://{addr}")),
        real_key,
        other_real_key,
        secrets_dir,
        server: Some(server),
    }
}

/// A configuration secret from its text.
pub fn secret(text: &str) -> Secret {
    Secret::new(text)
}

fn write_secret(dir: &Path, name: &str, value: &str) {
    std::fs::write(dir.join(name), value).expect("write a secret file");
}

impl TestApp {
    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Adds (or replaces) a secret in this app's directory; the file source reads it at the next issue.
    pub fn add_secret(&self, name: &str, value: &str) {
        write_secret(self.secrets_dir.path(), name, value);
    }

    /// A request to `path`, with `Authorization: Bearer <token>` when a token is given.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// A request to `path` with the admin token.
    ///
    /// # Panics
    /// When the app has no admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        let token = self.admin_token.as_deref().expect("this app has an admin token");
        self.request(method, path, Some(token))
    }

    /// `POST /v1/sessions` with a JSON body.
    pub async fn issue(&self, body: &Value) -> Response {
        send(self.request(Method::POST, "/v1/sessions", None).json(body)).await
    }

    /// Issues a session for `secret_key_id` (with `ttl_seconds` when given) and checks it is a 201.
    ///
    /// # Panics
    /// When the answer is not a 201 with a token and a session id.
    pub async fn issue_token(&self, secret_key_id: &str, ttl_seconds: Option<u64>) -> IssuedToken {
        let mut body = json!({ "secret_key_id": secret_key_id });
        if let Some(ttl) = ttl_seconds {
            body["ttl_seconds"] = json!(ttl);
        }
        let response = self.issue(&body).await;
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON body");
        assert_eq!(status, StatusCode::CREATED, "issue {secret_key_id}: {body}");
        IssuedToken {
            token: body["token"].as_str().expect("a token").to_owned(),
            session_id: body["session_id"].as_str().expect("a session_id").to_owned(),
            body,
        }
    }

    /// `GET /v1/auth/verify` with `token`.
    pub async fn verify(&self, token: &str) -> Response {
        send(self.request(Method::GET, "/v1/auth/verify", Some(token))).await
    }

    /// `GET /v1/session` with `token`.
    pub async fn show(&self, token: &str) -> Response {
        send(self.request(Method::GET, "/v1/session", Some(token))).await
    }

    /// `POST /v1/session/refresh` with `token`.
    pub async fn refresh(&self, token: &str) -> Response {
        send(self.request(Method::POST, "/v1/session/refresh", Some(token))).await
    }

    /// `DELETE /v1/session` with `token`.
    pub async fn revoke(&self, token: &str) -> Response {
        send(self.request(Method::DELETE, "/v1/session", Some(token))).await
    }

    /// Stops the server gracefully and checks that it ended without error.
    ///
    /// # Panics
    /// When the server reports a failure.
    pub async fn shutdown(mut self) {
        let server = self.server.take().expect("the server runs");
        if let Err(error) = server.shutdown().await {
            panic!("the server did not shut down cleanly: {error:#}");
        }
    }

    /// Stops the server and returns what `RunningServer::shutdown` returned, as text on failure.
    pub async fn try_shutdown(mut self) -> Result<(), String> {
        let server = self.server.take().expect("the server runs");
        server.shutdown().await.map_err(|error| format!("{error:#}"))
    }
}

/// Sends a request, failing the test (not returning an error) when no HTTP answer comes back.
///
/// # Panics
/// When the request fails at the transport level.
pub async fn send(request: RequestBuilder) -> Response {
    match request.send().await {
        Ok(response) => response,
        Err(error) => panic!("no HTTP answer: {error:?}"),
    }
}

/// Checks that `response` is a problem+json document with this status and code, and returns its body.
///
/// # Panics
/// When any of the contract's rules for an error does not hold.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    let actual = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let text = response.text().await.expect("a readable body");
    assert_eq!(actual, status, "expected {status} {code}, got {actual}: {text}");
    assert_eq!(content_type.as_deref(), Some(PROBLEM_JSON), "the Content-Type of a {status}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON problem body: {text}"));
    assert_eq!(body["code"], code, "the code: {body}");
    assert_eq!(body["status"], status, "the status field: {body}");
    for field in ["type", "title", "detail"] {
        assert!(
            body[field].as_str().is_some_and(|text| !text.is_empty()),
            "{field} must be a non-empty string: {body}"
        );
    }
    body
}

/// Checks a 401 `missing_token` with the bare RFC 6750 challenge.
///
/// # Panics
/// When it is anything else.
pub async fn assert_missing_token(response: Response) -> Value {
    let challenge = header(&response, "www-authenticate");
    let body = assert_problem(response, 401, "missing_token").await;
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="sidekey""#), "the challenge of {body}");
    body
}

/// Checks a 401 `invalid_token` whose challenge and detail give `description`.
///
/// # Panics
/// When it is anything else.
pub async fn assert_invalid_token(response: Response, description: &str) -> Value {
    let challenge = header(&response, "www-authenticate");
    let body = assert_problem(response, 401, "invalid_token").await;
    let expected =
        format!(r#"Bearer realm="sidekey", error="invalid_token", error_description="{description}""#);
    assert_eq!(challenge.as_deref(), Some(expected.as_str()), "the challenge of {body}");
    assert_eq!(body["detail"], description, "the detail of {body}");
    body
}

/// A response header as text, if present.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|value| value.to_str().expect("an ASCII header").to_owned())
}

/// What [`raw_http`] read back.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as sent (not de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("a JSON body: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Writes `request` as is to `addr`, then reads the answer until the server closes the connection (send
/// `Connection: close`). A server that answers before reading the whole body may reset the connection;
/// whatever arrived before the reset is still returned.
///
/// # Panics
/// When no complete status line and headers come back.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before taking every byte: a failed write is not the test's verdict.
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer within {REQUEST_TIMEOUT:?}"),
        }
    }
    let split = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP head: {:?}", String::from_utf8_lossy(&received)));
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    RawResponse { status, headers, body: received[split + 4..].to_vec() }
}

/// An in-memory log sink for tracing subscribers: every line any layer writes, for tests that search the
/// logs for secrets.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// One test's key prefix in a shared Redis (`sidekey-e2e-` and random hex). Every key whose name holds
/// it is deleted when this is dropped, also when the test panics halfway.
pub struct RedisPrefix {
    url: String,
    prefix: String,
}

impl RedisPrefix {
    /// A fresh prefix in the Redis at `url`.
    pub fn new(url: &str) -> Self {
        Self { url: url.to_owned(), prefix: format!("sidekey-e2e-{}", random_hex(12)) }
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix, for `store.prefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // Blocking calls, since a drop cannot await: a few milliseconds once per test. Best effort: the
        // keys expire by themselves anyway, and a failed cleanup must not hide the test's own verdict.
        use redis::Commands as _;
        let Ok(client) = redis::Client::open(self.url.as_str()) else { return };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else { return };
        let keys: Vec<String> = match connection.scan_match(format!("*{}*", self.prefix)) {
            Ok(keys) => keys.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = connection.del(keys);
        }
    }
}
