//! WebSockets through the proxy: an `Upgrade: websocket` request on a proxy route, once it has passed
//! every check of [`super::route`], is connected to the upstream and relayed frame by frame.
//!
//! The order: the route checks the request as any other (token, upstream, allowlist, path, route, origin,
//! the `model` query parameter, rate, budgets), so a refusal is the usual problem+json before any upgrade.
//! Then `open` connects to the upstream (`ws://` or `wss://` from its `base_url`, the same path and
//! query mapping and the same headers as HTTP proxying, the real key injected, the client's credential
//! and `sidekey` subprotocols removed), and only when the upstream has answered `101` does the client
//! get its own `101`, with the subprotocol the upstream chose. A refusal by the upstream goes back to the
//! client as the upstream's status and body, as with HTTP.
//!
//! The relay is one task per socket that forwards each message as soon as it is read (text, binary,
//! ping, pong, close with its code and reason) and watches the session: it re-verifies the token every
//! `RECHECK` (500 ms; the Redis store answers from its local cache, invalidated by pub/sub, so a check
//! is cheap and a revocation on any instance is seen within a second), the upstream's
//! `websocket_max_seconds` and `websocket_idle_seconds`, the models a client's `session.update` names,
//! and the server's shutdown ([`Relays`]). It closes both sides with 1008 and a short reason (1001 on
//! shutdown), audits the closing and counts it.
//!
//! Why tungstenite's messages rather than raw frames: a fragmented message is reassembled before it is
//! forwarded (bounded by `MAX_MESSAGE_BYTES`, 16 MiB), which is what lets a `session.update` be read
//! whole; the realtime APIs send whole messages of a few KiB, so nothing waits in practice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use poem::Response;
use sidekey_application::ports::{Remaining, Reservation};
use sidekey_application::{AUDIT_TARGET, Metering, SessionService};
use sidekey_domain::{Session, TokenUsage};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tower_service::Service;
use zeroize::Zeroizing;

use super::Upstream;
use crate::problem::{ApiError, ErrorCode};

/// The subprotocol prefix that carries the session token from a browser (`new WebSocket(url,
/// ["sidekey-token." + token])`): a browser's WebSocket cannot send `Authorization`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "sidekey-token.";
/// A marker subprotocol a client offers beside the token; never forwarded, and chosen in the answer when
/// the upstream chose no subprotocol (a browser fails a socket whose offered subprotocols were all
/// ignored, and the token itself is never echoed).
pub const MARKER_SUBPROTOCOL: &str = "sidekey";

/// How often a live socket re-verifies its session: revocations on any instance close it within a second.
const RECHECK: Duration = Duration::from_millis(500);
/// How long a closing side may take to answer the close before its connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Largest message relayed: a realtime API's audio chunk is a few hundred KiB of base64 at most.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The read buffer of each side: small, so an idle socket holds little memory (tungstenite's default
/// is 128 KiB); larger messages grow it while they are read.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Log target of the relay's own lines (never a frame: tungstenite's targets are held at `warn`).
const LOG_TARGET: &str = "sidekey::websocket";

/// The configuration of both sides of a relay.
fn config() -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = READ_BUFFER_BYTES;
    // Each message is written at once: nothing waits in a write buffer.
    config.write_buffer_size = 0;
    config.max_message_size = Some(MAX_MESSAGE_BYTES);
    config.max_frame_size = Some(MAX_MESSAGE_BYTES);
    config
}

/// Whether `headers` ask for a WebSocket upgrade (`Upgrade: websocket`, `Connection: upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("websocket")));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")));
    upgrade && connection
}

/// The subprotocols the client offered, in order.
fn offered_subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
}

/// The session token offered as the subprotocol `sidekey-token.<token>`, if any.
pub fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    offered_subprotocols(headers).find_map(|protocol| protocol.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX))
}

/// Whether `protocol` is sidekey's own (the token, the marker): never forwarded, never echoed.
fn is_sidekey_subprotocol(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case(MARKER_SUBPROTOCOL)
        || protocol
            .get(..TOKEN_SUBPROTOCOL_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(TOKEN_SUBPROTOCOL_PREFIX))
}

/// The subprotocols to offer the upstream: the client's, minus sidekey's own.
fn forwarded_subprotocols(headers: &HeaderMap) -> Vec<&str> {
    offered_subprotocols(headers).filter(|protocol| !is_sidekey_subprotocol(protocol)).collect()
}

/// The WebSocket connector: hyper-rustls's (ring, webpki roots), HTTP/1.1 only, since an upgrade is an
/// HTTP/1.1 affair (ALPN must not pick `h2`).
pub(crate) type WebSocketConnector = HttpsConnector<HttpConnector>;

/// Builds the connector for upstream WebSockets.
///
/// # Errors
/// When rustls refuses its default configuration (it does not, with ring).
pub(crate) fn connector() -> Result<WebSocketConnector, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// The live sockets of a server, so that shutdown can close them (1001) and wait for them.
#[derive(Clone)]
pub struct Relays(Arc<RelaysInner>);

struct RelaysInner {
    shutdown: watch::Sender<bool>,
    open: AtomicUsize,
    closed: Notify,
}

impl Default for Relays {
    fn default() -> Self {
        Self(Arc::new(RelaysInner {
            shutdown: watch::Sender::new(false),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
        }))
    }
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays").field("open", &self.open()).finish()
    }
}

impl Relays {
    /// Live sockets.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// Asks every live socket to close with 1001; new upgrades are refused from now on.
    pub fn shut_down(&self) {
        self.0.shutdown.send_replace(true);
    }

    /// Waits until no socket is live.
    pub async fn closed(&self) {
        loop {
            let notified = self.0.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn register(&self) -> Option<RelayGuard> {
        if *self.0.shutdown.borrow() {
            return None;
        }
        self.0.open.fetch_add(1, Ordering::AcqRel);
        Some(RelayGuard { relays: self.clone(), shutdown: self.0.shutdown.subscribe() })
    }
}

/// One live socket's place in [`Relays`].
struct RelayGuard {
    relays: Relays,
    shutdown: watch::Receiver<bool>,
}

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.relays.0.open.fetch_sub(1, Ordering::AcqRel);
        self.relays.0.closed.notify_waiters();
    }
}

/// What the relay watches about its session.
pub(crate) struct Watch {
    /// The use cases, to re-verify the token.
    pub sessions: Arc<SessionService>,
    /// To settle the usage of the socket's responses.
    pub metering: Arc<Metering>,
    /// The token the session was authenticated with (zeroed on drop; never logged).
    pub token: Zeroizing<String>,
    /// The session as verified at the upgrade.
    pub session: Session,
    /// The upgrade's reservation and what remained then, when the session is limited.
    pub admitted: Option<(Box<Reservation>, Remaining)>,
    /// The server's live sockets.
    pub relays: Relays,
}

impl Drop for Watch {
    /// An upgrade that never became a relay (the upstream refused or failed, the client left) generated
    /// nothing: its reservation goes back at once rather than at its lapse. A relay settles it itself.
    fn drop(&mut self) {
        if let Some((reservation, _)) = self.admitted.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let metering = self.metering.clone();
            runtime.spawn(async move { metering.settle(&reservation, TokenUsage::default()).await });
        }
    }
}

/// Connects `upstream_request` (built by [`Upstream::request`]) to the upstream as a WebSocket and, once
/// it has accepted, answers the client's upgrade and spawns the relay.
///
/// # Errors
/// [`ApiError`]s: `invalid_request` for a malformed handshake, `upstream_error` / `upstream_timeout`,
/// `store_unavailable`-like 503 while shutting down.
pub(crate) async fn open(
    connector: &WebSocketConnector,
    upstream: &Upstream,
    upstream_request: hyper::http::Request<super::RequestBody>,
    request: &poem::Request,
    watch: Watch,
) -> Result<Response, ApiError> {
    let client_key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| {
            request.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|version| version == "13")
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            )
        })?;
    let accept = derive_accept_key(client_key.as_bytes());
    let on_upgrade = request
        .take_upgrade()
        .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "this connection cannot be upgraded"))?;
    let Some(guard) = watch.relays.register() else {
        return Err(ApiError::new(ErrorCode::NotReady, "the server is shutting down"));
    };

    let (parts, _) = upstream_request.into_parts();
    let http_uri = parts.uri.clone();
    let mut builder =
        hyper::http::Uri::builder().scheme(if http_uri.scheme_str() == Some("https") { "wss" } else { "ws" });
    if let Some(authority) = http_uri.authority() {
        builder = builder.authority(authority.clone());
    }
    if let Some(path_and_query) = http_uri.path_and_query() {
        builder = builder.path_and_query(path_and_query.clone());
    }
    let ws_uri = builder.build().map_err(|_| {
        ApiError::new(ErrorCode::InvalidRequest, "the upstream URL cannot be a WebSocket URL")
    })?;
    let mut headers = parts.headers;
    // The client's handshake headers are its own connection's: the upstream gets a fresh key, and no
    // extension sidekey could not relay (compression).
    let stale: Vec<_> =
        headers.keys().filter(|name| name.as_str().starts_with("sec-websocket-")).cloned().collect();
    for name in stale {
        headers.remove(name);
    }
    let subprotocols = forwarded_subprotocols(request.headers());
    if !subprotocols.is_empty()
        && let Ok(value) = HeaderValue::from_str(&subprotocols.join(", "))
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(authority) = http_uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_str(&generate_key()).expect("a base64 key is a header value"),
    );
    let mut handshake = tungstenite::http::Request::new(());
    *handshake.uri_mut() = ws_uri;
    *handshake.headers_mut() = headers;

    let mut connector = connector.clone();
    let stream = match tokio::time::timeout(upstream.connect_timeout, connector.call(http_uri)).await {
        Err(_) => return Err(timeout(upstream)),
        Ok(Err(error)) => return Err(unreachable(upstream, &error.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let connecting =
        tokio_tungstenite::client_async_with_config(handshake, TokioIo::new(stream), Some(config()));
    let (upstream_socket, answer) = match tokio::time::timeout(upstream.response_timeout, connecting).await {
        Err(_) => return Err(timeout(upstream)),
        Ok(Err(tungstenite::Error::Http(refusal))) => {
            // The upstream's own refusal (401 for a bad key, 404, 429…) goes back as it was sent.
            let (parts, body) = refusal.into_parts();
            let mut response_headers = parts.headers;
            super::headers::clean_response_headers(&mut response_headers);
            tracing::info!(
                target: LOG_TARGET,
                upstream = upstream.name(),
                status = parts.status.as_u16(),
                session_id = %watch.session.id(),
                "the upstream refused the WebSocket"
            );
            let mut response = Response::builder().status(parts.status).body(body.unwrap_or_default());
            *response.headers_mut() = response_headers;
            return Ok(response);
        }
        Ok(Err(error)) => return Err(unreachable(upstream, &error.to_string())),
        Ok(Ok(connected)) => connected,
    };

    // A browser that offered subprotocols fails the socket unless one is chosen: when the upstream
    // chose none, the `sidekey` marker the client offered beside its token is (never the token).
    let marker_offered = offered_subprotocols(request.headers())
        .any(|protocol| protocol.eq_ignore_ascii_case(MARKER_SUBPROTOCOL));
    let chosen = answer
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .filter(|value| value.to_str().is_ok_and(|protocol| !is_sidekey_subprotocol(protocol)))
        .cloned()
        .or_else(|| marker_offered.then(|| HeaderValue::from_static(MARKER_SUBPROTOCOL)));
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .finish();
    if let Some(chosen) = chosen {
        response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, chosen);
    }
    tracing::info!(
        target: LOG_TARGET,
        upstream = upstream.name(),
        session_id = %watch.session.id(),
        "WebSocket opened"
    );
    let upstream = upstream.clone();
    tokio::spawn(async move {
        let client = match on_upgrade.await {
            Ok(upgraded) => WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config())).await,
            Err(error) => {
                tracing::debug!(target: LOG_TARGET, %error, "the client's upgrade failed");
                return;
            }
        };
        relay(client, upstream_socket, &upstream, watch, guard).await;
    });
    Ok(response)
}

fn timeout(upstream: &Upstream) -> ApiError {
    ApiError::new(
        ErrorCode::UpstreamTimeout,
        format!("upstream {:?} did not accept the WebSocket in time", upstream.name()),
    )
}

fn unreachable(upstream: &Upstream, cause: &str) -> ApiError {
    // tungstenite's and hyper's errors name no header, so no key.
    tracing::warn!(target: LOG_TARGET, upstream = upstream.name(), %cause, "upstream WebSocket failed");
    ApiError::new(
        ErrorCode::UpstreamError,
        format!("upstream {:?} failed to open the WebSocket", upstream.name()),
    )
}

/// Why a relay ended: the label of `sidekey_websocket_closes_total` and of the audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (its code passed on).
    ClientClosed,
    /// The upstream closed (its code passed on).
    UpstreamClosed,
    /// A side's connection ended without a close, or failed.
    ConnectionLost,
    /// The session was revoked (or is unknown to the store).
    SessionRevoked,
    /// The session expired.
    SessionExpired,
    /// `websocket_max_seconds` passed.
    MaxDuration,
    /// `websocket_idle_seconds` passed without a message.
    Idle,
    /// A client `session.update` named a model outside the scope.
    ModelNotAllowed,
    /// A token budget was used up.
    QuotaExceeded,
    /// The server is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The reason as the close frame, the metric and the audit event say it.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::UpstreamClosed => "upstream_closed",
            Self::ConnectionLost => "connection_lost",
            Self::SessionRevoked => "session_revoked",
            Self::SessionExpired => "session_expired",
            Self::MaxDuration => "max_duration",
            Self::Idle => "idle",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Shutdown => "shutdown",
        }
    }

    /// The close code sidekey sends both sides, when sidekey is the one closing.
    fn code(self) -> Option<CloseCode> {
        match self {
            Self::ClientClosed | Self::UpstreamClosed | Self::ConnectionLost => None,
            Self::Shutdown => Some(CloseCode::Away),
            _ => Some(CloseCode::Policy),
        }
    }
}

/// What a relayed text message from the upstream or the client means to sidekey.
#[derive(Debug, Default, PartialEq, Eq)]
struct Inspected {
    /// A client `session.update` names this model.
    model: Option<String>,
    /// An upstream `response.done` reports this usage.
    usage: Option<TokenUsage>,
}

/// Reads a message's `type` and, for the two types sidekey cares about, what they carry. Cheap for the
/// rest: the JSON is parsed only when the text mentions one of the types.
fn inspect(text: &str, from_client: bool) -> Inspected {
    let wanted = if from_client { "session.update" } else { "response.done" };
    if !text.contains(wanted) {
        return Inspected::default();
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else { return Inspected::default() };
    if value.get("type").and_then(serde_json::Value::as_str) != Some(wanted) {
        return Inspected::default();
    }
    if from_client {
        let model = value.pointer("/session/model").and_then(serde_json::Value::as_str).map(str::to_owned);
        return Inspected { model, usage: None };
    }
    let usage = value.pointer("/response/usage").map(|usage| TokenUsage {
        input: usage.get("input_tokens").and_then(serde_json::Value::as_u64).unwrap_or(0),
        output: usage.get("output_tokens").and_then(serde_json::Value::as_u64).unwrap_or(0),
    });
    Inspected { model: None, usage }
}

/// Relays messages both ways until a side closes or a rule closes both.
async fn relay<C, U>(
    mut client: WebSocketStream<C>,
    mut upstream_socket: WebSocketStream<U>,
    upstream: &Upstream,
    mut watch: Watch,
    mut guard: RelayGuard,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = upstream.name().to_owned();
    let open_gauge = metrics::gauge!("sidekey_websockets_open", "upstream" => name.clone());
    open_gauge.increment(1.0);
    let started = Instant::now();
    let (max, idle) = upstream.websocket_limits();
    let ends_at = started + max;
    let mut idle_at = started + idle;
    let mut recheck = tokio::time::interval_at(started + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let restricts_models = upstream.policy().restricts_models(watch.session.scope());
    let token_budget = watch.admitted.as_ref().and_then(|(_, remaining)| remaining.tokens);
    let meters = watch.metering.meters_tokens(&watch.session);
    let mut used = TokenUsage::default();

    let reason = loop {
        tokio::select! {
            biased;
            _ = guard.shutdown.changed() => break CloseReason::Shutdown,
            _ = recheck.tick() => {
                match watch.sessions.verify(&watch.token).await {
                    Ok(_) => {}
                    Err(sidekey_application::VerifyError::Rejected(rejection)) => {
                        break match rejection {
                            sidekey_application::Rejection::Expired => CloseReason::SessionExpired,
                            _ => CloseReason::SessionRevoked,
                        };
                    }
                    // A store blip does not cut a live conversation: the next check asks again.
                    Err(error) => tracing::warn!(
                        target: LOG_TARGET,
                        session_id = %watch.session.id(),
                        %error,
                        "a live WebSocket's session could not be re-verified"
                    ),
                }
            }
            () = tokio::time::sleep_until(ends_at) => break CloseReason::MaxDuration,
            () = tokio::time::sleep_until(idle_at) => break CloseReason::Idle,
            read = client.next() => {
                let message = match read {
                    Some(Ok(message)) => message,
                    Some(Err(_)) | None => {
                        let _ = upstream_socket.close(None).await;
                        break CloseReason::ConnectionLost;
                    }
                };
                idle_at = Instant::now() + idle;
                if restricts_models && let Message::Text(text) = &message
                    && let Some(model) = inspect(text.as_str(), true).model
                    && !(upstream.policy().admits_model(&model) && watch.session.scope().admits_model(&model))
                {
                    break CloseReason::ModelNotAllowed;
                }
                if let Message::Close(frame) = message {
                    finish(&mut upstream_socket, &mut client, frame).await;
                    break CloseReason::ClientClosed;
                }
                if upstream_socket.send(message).await.is_err() {
                    let _ = client.close(None).await;
                    break CloseReason::ConnectionLost;
                }
            }
            read = upstream_socket.next() => {
                let message = match read {
                    Some(Ok(message)) => message,
                    Some(Err(_)) | None => {
                        let _ = client.close(None).await;
                        break CloseReason::ConnectionLost;
                    }
                };
                idle_at = Instant::now() + idle;
                let mut exhausted = false;
                if meters && let Message::Text(text) = &message
                    && let Some(usage) = inspect(text.as_str(), false).usage
                {
                    used.input = used.input.saturating_add(usage.input);
                    used.output = used.output.saturating_add(usage.output);
                    let total = used.input.saturating_add(used.output);
                    exhausted = token_budget.is_some_and(|budget| total >= budget);
                }
                if let Message::Close(frame) = message {
                    finish(&mut client, &mut upstream_socket, frame).await;
                    break CloseReason::UpstreamClosed;
                }
                if client.send(message).await.is_err() {
                    let _ = upstream_socket.close(None).await;
                    break CloseReason::ConnectionLost;
                }
                // After the response that crossed the budget, not before: it was already paid for.
                if exhausted {
                    break CloseReason::QuotaExceeded;
                }
            }
        }
    };

    if let Some(code) = reason.code() {
        let frame = CloseFrame { code, reason: reason.label().into() };
        let (a, b) = tokio::join!(close(&mut client, frame.clone()), close(&mut upstream_socket, frame));
        let _ = (a, b);
    }
    if let Some((reservation, _)) = watch.admitted.take() {
        watch.metering.settle(&reservation, used).await;
    }
    open_gauge.decrement(1.0);
    let reason_label = reason.label();
    metrics::counter!("sidekey_websocket_closes_total", "upstream" => name.clone(), "reason" => reason_label)
        .increment(1);
    let session = &watch.session;
    tracing::info!(
        target: AUDIT_TARGET,
        event = "websocket.closed",
        reason = reason.label(),
        upstream = name,
        session_id = %session.id(),
        subject = session.subject().map(|subject| subject.as_str()),
        seconds = started.elapsed().as_secs(),
        input_tokens = used.input,
        output_tokens = used.output,
    );
    drop(guard);
}

/// Passes a close from one side to the other and waits (bounded) for the other's answer, so both
/// closing handshakes complete.
async fn finish<A, B>(to: &mut WebSocketStream<A>, from: &mut WebSocketStream<B>, frame: Option<CloseFrame>)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // tungstenite has already queued the echo of `from`'s close; flushing sends it.
    let _ = tokio::join!(
        close(to, frame.unwrap_or(CloseFrame { code: CloseCode::Normal, reason: "".into() })),
        async {
            let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = from.next().await {} })
                .await;
        }
    );
}

/// Sends `frame` and waits (bounded) for the peer's close.
async fn close<S>(socket: &mut WebSocketStream<S>, frame: CloseFrame) -> Result<(), tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    socket.send(Message::Close(Some(frame))).await?;
    let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = socket.next().await {} }).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(protocols: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(protocols).unwrap());
        headers
    }

    #[test]
    fn the_token_subprotocol_is_read_and_never_forwarded_with_the_marker() {
        let headers = headers("sidekey, sidekey-token.skt_abc, realtime");
        assert_eq!(subprotocol_token(&headers), Some("skt_abc"));
        assert_eq!(forwarded_subprotocols(&headers), vec!["realtime"]);
        let none = self::headers("realtime,  openai-beta.realtime-v1");
        assert_eq!(subprotocol_token(&none), None);
        assert_eq!(forwarded_subprotocols(&none), vec!["realtime", "openai-beta.realtime-v1"]);
        assert!(is_sidekey_subprotocol("SIDEKEY-TOKEN.x"));
    }

    #[test]
    fn an_upgrade_needs_both_upgrade_and_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(!is_upgrade(&headers));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_upgrade(&headers));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&headers));
    }

    #[test]
    fn session_updates_and_response_usage_are_read_and_other_messages_ignored() {
        let update = r#"{"type":"session.update","session":{"model":"gpt-4o","voice":"alloy"}}"#;
        assert_eq!(inspect(update, true).model.as_deref(), Some("gpt-4o"));
        assert_eq!(inspect(update, false), Inspected::default());
        let other = r#"{"type":"input_audio_buffer.append","audio":"session.update"}"#;
        assert_eq!(inspect(other, true), Inspected::default());
        let done = r#"{"type":"response.done","response":{"usage":{"total_tokens":30,"input_tokens":20,"output_tokens":10}}}"#;
        assert_eq!(inspect(done, false).usage, Some(TokenUsage { input: 20, output: 10 }));
        assert_eq!(inspect("not json response.done", false), Inspected::default());
    }
}
