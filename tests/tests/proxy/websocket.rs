//! WebSockets through the proxy (the README's "Realtime"): a recording WebSocket upstream on
//! `127.0.0.1:0`, a sidekey in front of it, and a client that upgrades on `/v1/proxy/realtime/…`.
//!
//! The upstream records each handshake (path, query, headers) and each message; it echoes text and
//! binary messages, closes with code 4000 when told `close`, and reports Realtime usage (a
//! `response.done` event) when told `usage`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sidekey_test_support::ManualClock;
use sidekey_tests::{SECRET_KEY_ID, TestApp, spawn_app_on, spawn_app_with};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as ClientResponse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async, client_async};

use super::instances::Instances;
use super::sdk::python;
use super::upstream_config;

/// The upstream's name in these tests.
const NAME: &str = "realtime";
/// The subprotocol the upstream picks when offered.
const UPSTREAM_PROTOCOL: &str = "realtime";
/// The usage the upstream reports for `usage`.
const INPUT_TOKENS: u64 = 20;
const OUTPUT_TOKENS: u64 = 10;
/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// One handshake the upstream accepted.
#[derive(Debug, Clone)]
struct Handshake {
    path_and_query: String,
    headers: Vec<(String, String)>,
}

impl Handshake {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    fn contains(&self, needle: &str) -> bool {
        self.path_and_query.contains(needle)
            || self.headers.iter().any(|(key, value)| key.contains(needle) || value.contains(needle))
    }
}

#[derive(Default)]
struct Record {
    handshakes: Vec<Handshake>,
    messages: Vec<Message>,
}

/// The recording WebSocket upstream.
struct WsUpstream {
    addr: std::net::SocketAddr,
    record: Arc<Mutex<Record>>,
}

impl WsUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = record.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self { addr, record }
    }

    fn url(&self) -> String {
        format!("http://{}/base", self.addr)
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.record.lock().unwrap().handshakes.clone()
    }

    fn messages(&self) -> Vec<Message> {
        self.record.lock().unwrap().messages.clone()
    }
}

// The callback's error type is tungstenite's (an HTTP response), not ours to make smaller.
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, record: Arc<Mutex<Record>>) {
    let recorded = record.clone();
    let callback = move |request: &Request, mut response: Response| {
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect::<Vec<_>>();
        let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.split(',').any(|protocol| protocol.trim() == UPSTREAM_PROTOCOL));
        if offered {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(UPSTREAM_PROTOCOL));
        }
        let path_and_query = request.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
        recorded.lock().unwrap().handshakes.push(Handshake { path_and_query, headers });
        Ok(response)
    };
    let Ok(mut socket) = accept_hdr_async(stream, callback).await else { return };
    while let Some(Ok(message)) = socket.next().await {
        record.lock().unwrap().messages.push(message.clone());
        match message {
            Message::Text(text) if text.as_str() == "close" => {
                let frame = CloseFrame { code: CloseCode::Library(4000), reason: "upstream done".into() };
                let _ = socket.close(Some(frame)).await;
            }
            Message::Text(text) if text.as_str() == "usage" => {
                let done = json!({"type": "response.done", "response": {"status": "completed", "usage": {
                    "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
                    "input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}}});
                let _ = socket.send(Message::text(done.to_string())).await;
            }
            Message::Text(_) | Message::Binary(_) => {
                let _ = socket.send(message).await;
            }
            _ => {}
        }
    }
}

type Client = WebSocketStream<TcpStream>;

/// Opens `path` on `app` as a WebSocket with these extra headers.
async fn connect(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, ClientResponse), tungstenite::Error> {
    let mut request = format!("ws://{}{path}", app.addr).into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let stream = TcpStream::connect(app.addr).await.unwrap();
    client_async(request, stream).await
}

/// The refusal of an upgrade: its status and problem document.
async fn refused(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    match connect(app, path, headers).await {
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().clone().unwrap_or_default();
            assert_eq!(
                response.headers().get("content-type").and_then(|value| value.to_str().ok()),
                Some("application/problem+json"),
            );
            (status, serde_json::from_slice(&body).expect("a problem document"))
        }
        Err(error) => panic!("expected an HTTP refusal, got {error}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn realtime_upstream(upstream: &WsUpstream) -> sidekey_http::UpstreamSettings {
    upstream_config(NAME, &upstream.url(), &[SECRET_KEY_ID])
}

/// Two instances on one Redis (a random prefix) in front of `upstream`; `None` (said) without Redis.
async fn two_instances_for(upstream: &WsUpstream) -> Option<Instances> {
    let settings = realtime_upstream(upstream);
    Instances::start(|config| config.upstreams = vec![settings.clone()], None).await
}

async fn app_for(upstream: &WsUpstream, tweak: impl Fn(&mut sidekey_http::UpstreamSettings)) -> TestApp {
    let mut settings = realtime_upstream(upstream);
    tweak(&mut settings);
    spawn_app_with(|config| config.upstreams = vec![settings]).await
}

/// The next message that is not a ping or pong, within [`PATIENCE`].
async fn next_data(client: &mut Client) -> Message {
    loop {
        let message = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a readable message");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// Reads until the close frame and returns it, with the time it took.
async fn close_frame(client: &mut Client, within: Duration) -> (Option<CloseFrame>, Duration) {
    let started = Instant::now();
    let frame = tokio::time::timeout(within, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("the socket failed before its close frame: {error}"),
                None => panic!("the socket ended without a close frame"),
            }
        }
    })
    .await
    .expect("a close frame in time");
    (frame, started.elapsed())
}

fn assert_closed_with(frame: Option<CloseFrame>, code: u16, reason: &str) {
    let frame = frame.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), code, "close code ({frame:?})");
    assert_eq!(frame.reason.as_str(), reason, "close reason");
}

#[tokio::test]
async fn frames_round_trip_in_order_with_the_real_key_upstream_and_the_token_nowhere() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let protocols = format!("sidekey, sidekey-token.{}, {UPSTREAM_PROTOCOL}", issued.token);
    let (mut client, answer) = connect(
        &app,
        "/v1/proxy/realtime/v1/realtime?model=gpt-realtime&x=1",
        &[("sec-websocket-protocol", &protocols)],
    )
    .await
    .expect("the upgrade succeeds");
    assert_eq!(
        answer.headers().get("sec-websocket-protocol").and_then(|value| value.to_str().ok()),
        Some(UPSTREAM_PROTOCOL),
        "the upstream's choice is returned"
    );
    for (name, value) in answer.headers() {
        assert!(!value.as_bytes().windows(4).any(|window| window == b"skt_"), "{name} echoes a token");
    }

    client.send(Message::text("one")).await.unwrap();
    client.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    client.send(Message::text("three")).await.unwrap();
    assert_eq!(next_data(&mut client).await, Message::text("one"));
    assert_eq!(next_data(&mut client).await, Message::binary(vec![0u8, 1, 2, 255]));
    assert_eq!(next_data(&mut client).await, Message::text("three"));

    client.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(Ok(Message::Pong(payload))) = client.next().await {
                return payload;
            }
        }
    })
    .await
    .expect("a pong");
    assert_eq!(&pong[..], b"are you there");

    let handshake = upstream.handshakes().pop().expect("the upstream saw a handshake");
    assert_eq!(handshake.path_and_query, "/base/v1/realtime?model=gpt-realtime&x=1");
    assert_eq!(handshake.header("authorization"), Some(bearer(&app.real_key).as_str()));
    assert_eq!(handshake.header("sec-websocket-protocol"), Some(UPSTREAM_PROTOCOL));
    assert!(handshake.header("x-sidekey-session-id").is_some_and(|id| id == issued.session_id));
    assert!(!handshake.contains(&issued.token), "the token reached the upstream: {handshake:#?}");
    assert!(!handshake.contains("skt_"), "something token-like reached the upstream: {handshake:#?}");
    assert!(!handshake.contains("sidekey,") && handshake.header("sec-websocket-protocol") != Some("sidekey"));
    let texts: Vec<_> = upstream
        .messages()
        .into_iter()
        .filter(|message| matches!(message, Message::Text(_) | Message::Binary(_)))
        .collect();
    assert_eq!(
        texts,
        vec![Message::text("one"), Message::binary(vec![0u8, 1, 2, 255]), Message::text("three")],
        "the upstream received the messages in order"
    );
    client.close(None).await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn a_bearer_header_authenticates_an_upgrade_too() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let (mut client, answer) =
        connect(&app, "/v1/proxy/realtime/v1/realtime", &[("authorization", &bearer(&issued.token))])
            .await
            .expect("the upgrade succeeds");
    assert!(answer.headers().get("sec-websocket-protocol").is_none());
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_data(&mut client).await, Message::text("hello"));
    let handshake = upstream.handshakes().pop().unwrap();
    assert_eq!(handshake.header("authorization"), Some(bearer(&app.real_key).as_str()));
    assert!(!handshake.contains(&issued.token));
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_close_and_an_upstream_close_each_reach_the_other_side_with_their_codes() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let auth = bearer(&issued.token);

    // The client closes: the upstream receives the client's code and reason.
    let (mut client, _) =
        connect(&app, "/v1/proxy/realtime/v1/realtime", &[("authorization", &auth)]).await.unwrap();
    client.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_data(&mut client).await, Message::text("hi"));
    client
        .close(Some(CloseFrame { code: CloseCode::Library(4321), reason: "client bye".into() }))
        .await
        .unwrap();
    let (echo, _) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(echo, 4321, "client bye");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let closes: Vec<_> = upstream
            .messages()
            .into_iter()
            .filter_map(|message| match message {
                Message::Close(frame) => frame,
                _ => None,
            })
            .collect();
        if let Some(frame) = closes.first() {
            assert_eq!(u16::from(frame.code), 4321);
            assert_eq!(frame.reason.as_str(), "client bye");
            break;
        }
        assert!(Instant::now() < deadline, "the upstream never received the client's close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The upstream closes: the client receives the upstream's code and reason.
    let (mut client, _) =
        connect(&app, "/v1/proxy/realtime/v1/realtime", &[("authorization", &auth)]).await.unwrap();
    client.send(Message::text("close")).await.unwrap();
    let (frame, _) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 4000, "upstream done");
    app.shutdown().await;
}

#[tokio::test]
async fn refusals_before_the_upgrade_are_problem_documents_and_reach_nothing() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |settings| {
        settings.models = Some(vec!["gpt-realtime".to_owned()]);
    })
    .await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let (status, body) = refused(&app, "/v1/proxy/realtime/v1/realtime", &[]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("missing_token")), "{body}");
    assert_eq!(body["error"]["code"], "missing_token", "{body}");

    let (status, body) = refused(
        &app,
        "/v1/proxy/realtime/v1/realtime",
        &[("sec-websocket-protocol", "sidekey-token.skt_nonsense")],
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{body}");

    let protocols = format!("sidekey-token.{}", issued.token);
    let (status, body) = refused(
        &app,
        "/v1/proxy/realtime/v1/realtime?model=gpt-4o",
        &[("sec-websocket-protocol", &protocols)],
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("model_not_allowed")), "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");

    assert!(upstream.handshakes().is_empty(), "a refused upgrade reached the upstream");
    app.shutdown().await;
}

/// Opens a socket with the token as a subprotocol and checks one round trip.
async fn open(app: &TestApp, token: &str, query: &str) -> Client {
    let protocols = format!("sidekey, sidekey-token.{token}");
    let path = format!("/v1/proxy/realtime/v1/realtime{query}");
    let (mut client, answer) =
        connect(app, &path, &[("sec-websocket-protocol", &protocols)]).await.expect("the upgrade succeeds");
    assert_eq!(
        answer.headers().get("sec-websocket-protocol").and_then(|value| value.to_str().ok()),
        Some("sidekey"),
        "the marker is chosen when the upstream chose nothing"
    );
    client.send(Message::text("ready?")).await.unwrap();
    assert_eq!(next_data(&mut client).await, Message::text("ready?"));
    client
}

#[tokio::test]
async fn revoking_the_session_closes_its_live_socket_with_1008_within_a_second() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let mut client = open(&app, &issued.token, "").await;

    assert_eq!(app.revoke(&issued.token).await.status(), 204);
    let (frame, took) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 1008, "session_revoked");
    assert!(took <= Duration::from_secs(1), "closed {took:?} after the revocation");
    app.shutdown().await;
}

#[tokio::test]
async fn a_revocation_on_another_instance_closes_the_socket_within_a_second() {
    let upstream = WsUpstream::start().await;
    let Some(instances) = two_instances_for(&upstream).await else { return };
    let issued = instances.a.issue_token(SECRET_KEY_ID, None).await;
    let mut client = open(&instances.a, &issued.token, "").await;

    assert_eq!(instances.b.revoke(&issued.token).await.status(), 204);
    let (frame, took) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 1008, "session_revoked");
    assert!(took <= Duration::from_secs(1), "closed {took:?} after the revocation on the other instance");
    instances.finish().await;
}

#[tokio::test]
async fn an_expired_session_closes_its_socket_with_1008() {
    let upstream = WsUpstream::start().await;
    let settings = realtime_upstream(&upstream);
    let clock = Arc::new(ManualClock::starting_now());
    let app = spawn_app_on(clock.clone(), |config| config.upstreams = vec![settings]).await;
    let issued = app.issue_token(SECRET_KEY_ID, Some(60)).await;
    let mut client = open(&app, &issued.token, "").await;

    clock.advance(Duration::from_secs(61));
    let (frame, _) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 1008, "session_expired");
    app.shutdown().await;
}

#[tokio::test]
async fn the_maximum_duration_and_the_idle_limit_close_the_socket_with_1008() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |settings| {
        settings.websocket_max_seconds = 2;
        settings.websocket_idle_seconds = 1;
    })
    .await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let mut idle = open(&app, &issued.token, "").await;
    let (frame, took) = close_frame(&mut idle, PATIENCE).await;
    assert_closed_with(frame, 1008, "idle");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // Kept busy, the socket still ends at the maximum duration.
    let mut busy = open(&app, &issued.token, "").await;
    let started = Instant::now();
    let frame = loop {
        busy.send(Message::text("still here")).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(300), busy.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("unexpected: {other:?}"),
        }
        assert!(started.elapsed() < PATIENCE, "never closed");
    };
    assert_closed_with(frame, 1008, "max_duration");
    assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_update_to_a_model_outside_the_scope_closes_the_socket_and_is_not_forwarded() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |settings| {
        settings.models = Some(vec!["gpt-realtime*".to_owned()]);
    })
    .await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let mut client = open(&app, &issued.token, "?model=gpt-realtime").await;

    let allowed = json!({"type": "session.update", "session": {"model": "gpt-realtime-mini"}}).to_string();
    client.send(Message::text(allowed.clone())).await.unwrap();
    assert_eq!(next_data(&mut client).await, Message::text(allowed));

    let forbidden =
        json!({"type": "session.update", "session": {"model": "gpt-4o", "instructions": "x"}}).to_string();
    client.send(Message::text(forbidden.clone())).await.unwrap();
    let (frame, _) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 1008, "model_not_allowed");
    assert!(
        !upstream.messages().contains(&Message::text(forbidden)),
        "the forbidden session.update reached the upstream"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_live_sockets_with_1001() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let mut client = open(&app, &issued.token, "").await;

    let stopping = tokio::spawn(app.shutdown());
    let (frame, _) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 1001, "shutdown");
    tokio::time::timeout(PATIENCE, stopping).await.expect("the server stops").unwrap();
}

#[tokio::test]
async fn a_metered_session_is_charged_the_realtime_usage_and_closed_once_its_budget_is_used() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let response = app
        .issue(&json!({"secret_key_id": SECRET_KEY_ID, "limits": {"max_tokens": INPUT_TOKENS + OUTPUT_TOKENS + 5}}))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let mut client = open(&app, &token, "").await;

    // The first response leaves 5 tokens; the second crosses the budget, arrives, then the socket closes.
    for _ in 0..2 {
        client.send(Message::text("usage")).await.unwrap();
        let done: Value = match next_data(&mut client).await {
            Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("expected response.done, got {other:?}"),
        };
        assert_eq!(done["type"], "response.done");
    }
    let (frame, _) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 1008, "quota_exceeded");

    let deadline = Instant::now() + PATIENCE;
    loop {
        let shown: Value = app.show(&token).await.json().await.unwrap();
        if shown["usage"]["output_tokens"] == 2 * OUTPUT_TOKENS {
            assert_eq!(shown["usage"]["input_tokens"], 2 * INPUT_TOKENS, "{shown}");
            assert_eq!(shown["usage"]["requests"], 1, "the upgrade counts as one request: {shown}");
            break;
        }
        assert!(Instant::now() < deadline, "the usage was never settled: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

/// The Python `websockets` client: the token as a subprotocol beside `realtime`.
const PYTHON_CLIENT: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1], subprotocols=["sidekey", "sidekey-token." + sys.argv[2], "realtime"]) as ws:
        await ws.send("from python")
        echoed = await ws.recv()
        await ws.send(b"\x00\x01")
        binary = await ws.recv()
        print(json.dumps({"protocol": ws.subprotocol, "echoed": echoed, "binary": list(binary)}))

asyncio.run(main())
"#;

#[tokio::test]
async fn the_python_websockets_client_connects_with_the_token_as_a_subprotocol() {
    let probe = python(vec!["-c".to_owned(), "import websockets".to_owned()]).await;
    if !probe.is_ok_and(|output| output.status.success()) {
        sidekey_test_support::skip(
            "python3 with the websockets package is not installed (python3 -m pip install websockets)",
        );
        return;
    }
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let url = format!("ws://{}/v1/proxy/realtime/v1/realtime", app.addr);
    let run = python(vec!["-c".to_owned(), PYTHON_CLIENT.to_owned(), url, issued.token.clone()]);
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("python finishes").unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client failed: {stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{stderr}"));
    assert_eq!(result["protocol"], UPSTREAM_PROTOCOL);
    assert_eq!(result["echoed"], "from python");
    assert_eq!(result["binary"], json!([0, 1]));
    let handshake = upstream.handshakes().pop().unwrap();
    assert!(!handshake.contains(&issued.token));
    app.shutdown().await;
}

/// Asks `app` for a ticket for `token`, checking the answer's shape.
async fn ticket(app: &TestApp, token: &str) -> String {
    let response =
        sidekey_tests::send(app.request(reqwest::Method::POST, "/v1/session/tickets", Some(token))).await;
    assert_eq!(response.status(), 201);
    assert_eq!(sidekey_tests::header(&response, "cache-control").as_deref(), Some("no-store"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["expires_in"], 30, "{body}");
    let ticket = body["ticket"].as_str().expect("a ticket").to_owned();
    assert!(ticket.starts_with("skq_") && ticket.len() >= 47, "{ticket}");
    ticket
}

#[tokio::test]
async fn a_ticket_opens_one_websocket_never_reaches_the_upstream_and_is_refused_when_reused() {
    let upstream = WsUpstream::start().await;
    let app = app_for(&upstream, |_| {}).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let ticket = ticket(&app, &issued.token).await;

    let path = format!("/v1/proxy/realtime/v1/realtime?model=gpt-realtime&sidekey_ticket={ticket}");
    let (mut client, _) = connect(&app, &path, &[]).await.expect("the ticket opens the socket");
    client.send(Message::text("with a ticket")).await.unwrap();
    assert_eq!(next_data(&mut client).await, Message::text("with a ticket"));
    let handshake = upstream.handshakes().pop().unwrap();
    assert_eq!(handshake.path_and_query, "/base/v1/realtime?model=gpt-realtime");
    assert!(
        !handshake.contains(&ticket) && !handshake.contains("skq_") && !handshake.contains(&issued.token)
    );
    assert_eq!(handshake.header("authorization"), Some(bearer(&app.real_key).as_str()));

    let (status, body) = refused(&app, &path, &[]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "reused: {body}");
    // The socket the ticket opened still lives by the session: revoking it closes the socket.
    assert_eq!(app.revoke(&issued.token).await.status(), 204);
    let (frame, _) = close_frame(&mut client, PATIENCE).await;
    assert_closed_with(frame, 1008, "session_revoked");
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_source_get_with_a_ticket_streams_and_a_late_ticket_is_refused() {
    let upstream = super::upstream::FakeUpstream::start().await;
    let settings = upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID]);
    let clock = Arc::new(ManualClock::starting_now());
    let app = spawn_app_on(clock.clone(), |config| config.upstreams = vec![settings]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    // As an EventSource would: a bare GET, no Authorization, the ticket in the query.
    let ticket = ticket(&app, &issued.token).await;
    let url = app.url(&format!("/v1/proxy/openai/v1/sse?n=3&gap_ms=10&sidekey_ticket={ticket}"));
    let response = sidekey_tests::send(app.client.get(&url).header("accept", "text/event-stream")).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert_eq!(body.matches("data: ").count(), 3, "{body}");
    let seen = upstream.only_request();
    assert_eq!(seen.target, "/v1/sse?n=3&gap_ms=10");
    assert!(!seen.contains(&ticket) && !seen.contains(&issued.token));
    assert_eq!(seen.header("authorization"), Some(bearer(&app.real_key).as_str()));

    let reused = sidekey_tests::send(app.client.get(&url)).await;
    sidekey_tests::assert_problem(reused, 401, "invalid_token").await;

    // A POST may not spend a ticket: it is simply not a credential there.
    let ticket = self::ticket(&app, &issued.token).await;
    let post = app.client.post(app.url(&format!("/v1/proxy/openai/v1/x?sidekey_ticket={ticket}")));
    sidekey_tests::assert_problem(sidekey_tests::send(post).await, 401, "missing_token").await;

    clock.advance(Duration::from_secs(31));
    let url = app.url(&format!("/v1/proxy/openai/v1/sse?sidekey_ticket={ticket}"));
    sidekey_tests::assert_problem(sidekey_tests::send(app.client.get(&url)).await, 401, "invalid_token")
        .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_ticket_issued_on_one_instance_works_once_on_another() {
    let upstream = WsUpstream::start().await;
    let Some(instances) = two_instances_for(&upstream).await else { return };
    let issued = instances.a.issue_token(SECRET_KEY_ID, None).await;
    let ticket = ticket(&instances.a, &issued.token).await;
    let path = format!("/v1/proxy/realtime/v1/realtime?sidekey_ticket={ticket}");
    let (mut client, _) = connect(&instances.b, &path, &[]).await.expect("the ticket works on B");
    client.send(Message::text("b")).await.unwrap();
    assert_eq!(next_data(&mut client).await, Message::text("b"));
    let (status, body) = refused(&instances.a, &path, &[]).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{body}");
    drop(client);
    instances.finish().await;
}
