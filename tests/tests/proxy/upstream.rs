//! The fake upstream: a real HTTP server (poem) on `127.0.0.1:0` that records every request it receives
//! and answers by path, whatever prefix (an upstream's base path) comes before it:
//! - `…/sse?n=N&gap_ms=MS`: `N` server-sent events, the first at once, then one every `MS`, each emission
//!   time recorded ([`FakeUpstream::sse_sent`]);
//! - `…/forever`: an event every 100 ms until the connection goes; when the stream is dropped it says so
//!   ([`FakeUpstream::stream_dropped`]);
//! - `…/sleep?ms=MS`: waits `MS` before its headers;
//! - `…/status/CODE`: answers `CODE` with a JSON body of its own;
//! - `…/big?len=N`: answers `N` bytes of [`patterned`] data, streamed in 64 KiB chunks;
//! - `…/chat/completions`: an OpenAI-compatible chat completion, whole, or with `"stream": true` as three
//!   `chat.completion.chunk` events 200 ms apart and `data: [DONE]`;
//! - `…/upload`: reads the body chunk by chunk, says when the first chunk arrived
//!   ([`FakeUpstream::first_chunk`]), and answers `{"len": …}`;
//! - anything else: reads the whole body and answers 200 `{"ok": true}` with headers a proxy must filter.
//!
//! Plus two stand-ins for a broken upstream: [`closed_port`] (nothing listens: refused) and
//! [`hanging_up`] (accepts, then closes without a word), [`unanswered_port`] (SYNs unanswered) and
//! [`UntrustedTls`] (`openssl s_server` with a self-signed certificate).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Body, Endpoint, Request, Response, Server};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target: path and query, exactly as received.
    pub target: String,
    /// Every header (names lower-case), in order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Seen {
    /// The values of a header.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
    }

    /// The one value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.header_values(name);
        assert!(values.len() <= 1, "{name} came {} times: {values:?}", values.len());
        values.first().copied()
    }

    /// Whether `needle` appears anywhere in the request: target, header names and values, body.
    pub fn contains(&self, needle: &str) -> bool {
        self.target.contains(needle)
            || self.headers.iter().any(|(key, value)| key.contains(needle) || value.contains(needle))
            || self.body.windows(needle.len()).any(|window| window == needle.as_bytes())
    }
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    sse_sent: Mutex<Vec<Instant>>,
    stream_dropped: watch::Sender<Option<Instant>>,
    first_chunk: watch::Sender<Option<Instant>>,
}

/// A running fake upstream.
pub struct FakeUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts one.
    pub async fn start() -> Self {
        let state = Arc::new(State::default());
        let acceptor =
            TcpListener::bind("127.0.0.1:0").into_acceptor().await.expect("bind the fake upstream");
        let addr = *acceptor.local_addr()[0].as_socket_addr().expect("a TCP address");
        let endpoint = FakeEndpoint(state.clone());
        let task = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(endpoint).await;
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The one request received so far.
    pub fn only_request(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "the upstream received {} requests: {seen:#?}", seen.len());
        seen.into_iter().next().unwrap()
    }

    /// When each server-sent event left the upstream.
    pub fn sse_sent(&self) -> Vec<Instant> {
        self.state.sse_sent.lock().unwrap().clone()
    }

    /// When the `/forever` stream was dropped, waiting at most `within` for it.
    pub async fn stream_dropped(&self, within: Duration) -> Option<Instant> {
        wait_for(&self.state.stream_dropped, within).await
    }

    /// When the first body chunk of an `/upload` arrived, waiting at most `within` for it.
    pub async fn first_chunk(&self, within: Duration) -> Option<Instant> {
        wait_for(&self.state.first_chunk, within).await
    }
}

async fn wait_for(sender: &watch::Sender<Option<Instant>>, within: Duration) -> Option<Instant> {
    let mut receiver = sender.subscribe();
    let result = tokio::time::timeout(within, receiver.wait_for(Option::is_some)).await;
    result.ok().and_then(|value| value.ok().and_then(|value| *value))
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct FakeEndpoint(Arc<State>);

/// Says when it is dropped: the stream it sits in is gone.
struct DropSignal(Arc<State>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.stream_dropped.send_replace(Some(Instant::now()));
    }
}

fn query_number(request: &Request, name: &str, default: u64) -> u64 {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(default)
}

fn event_stream(body: Body) -> Response {
    Response::builder().content_type("text/event-stream").header("cache-control", "no-cache").body(body)
}

impl Endpoint for FakeEndpoint {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let state = self.0.clone();
        let path = request.uri().path().to_owned();
        let mut seen = Seen {
            method: request.method().to_string(),
            target: request.uri().path_and_query().map(ToString::to_string).unwrap_or_default(),
            headers: request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
                })
                .collect(),
            body: Vec::new(),
        };

        if path.ends_with("/upload") {
            let mut stream = request.take_body().into_bytes_stream();
            let mut len = 0usize;
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                if len == 0 {
                    state.first_chunk.send_replace(Some(Instant::now()));
                }
                len += chunk.len();
                seen.body.extend_from_slice(&chunk);
            }
            state.seen.lock().unwrap().push(seen);
            return Ok(Response::builder()
                .content_type("application/json")
                .body(format!("{{\"len\":{len}}}")));
        }

        seen.body = request.take_body().into_vec().await.unwrap_or_default();
        state.seen.lock().unwrap().push(seen);

        if path.ends_with("/sse") {
            let count = query_number(&request, "n", 3);
            let gap = Duration::from_millis(query_number(&request, "gap_ms", 300));
            let events = futures_util::stream::unfold(0u64, move |index| {
                let state = state.clone();
                async move {
                    if index >= count {
                        return None;
                    }
                    if index > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    state.sse_sent.lock().unwrap().push(Instant::now());
                    let event = Bytes::from(format!("data: {{\"index\":{index}}}\n\n"));
                    Some((Ok::<_, std::io::Error>(event), index + 1))
                }
            });
            return Ok(event_stream(Body::from_bytes_stream(events)));
        }
        if path.ends_with("/forever") {
            let signal = DropSignal(state);
            let events = futures_util::stream::unfold((0u64, signal), |(index, signal)| async move {
                if index > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let event = Bytes::from(format!("data: {index}\n\n"));
                Some((Ok::<_, std::io::Error>(event), (index + 1, signal)))
            });
            return Ok(event_stream(Body::from_bytes_stream(events)));
        }
        if path.ends_with("/chat/completions") {
            let request: serde_json::Value =
                serde_json::from_slice(&state.seen.lock().unwrap().last().unwrap().body).unwrap_or_default();
            return Ok(chat_completion(&state, request["stream"].as_bool().unwrap_or(false)));
        }
        if path.ends_with("/big") {
            let body = patterned(usize::try_from(query_number(&request, "len", 0)).unwrap());
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                body.chunks(64 * 1024).map(|chunk| Ok(Bytes::copy_from_slice(chunk))).collect();
            return Ok(Response::builder()
                .content_type("application/octet-stream")
                .body(Body::from_bytes_stream(futures_util::stream::iter(chunks))));
        }
        if path.ends_with("/sleep") {
            tokio::time::sleep(Duration::from_millis(query_number(&request, "ms", 1000))).await;
            return Ok(Response::builder().body("slept"));
        }
        if let Some(code) = path.rsplit_once("/status/").and_then(|(_, code)| code.parse::<u16>().ok()) {
            let status = StatusCode::from_u16(code).expect("a status code");
            return Ok(Response::builder()
                .status(status)
                .content_type("application/json")
                .header("x-upstream-header", "kept")
                .body(format!("{{\"error\":{{\"message\":\"the upstream says {code}\"}}}}")));
        }
        Ok(Response::builder()
            .content_type("application/json")
            .header("x-upstream-header", "kept")
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "must not cross")
            .header("keep-alive", "timeout=5")
            .header("access-control-allow-origin", "*")
            .header("alt-svc", "h3=\":443\"")
            .body(r#"{"ok":true}"#))
    }
}

/// An OpenAI-compatible chat completion answering "Hello, world!", whole or streamed.
fn chat_completion(state: &Arc<State>, stream: bool) -> Response {
    if !stream {
        let body = serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": "Hello, world!" } }],
            "usage": { "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6 },
        });
        return Response::builder().content_type("application/json").body(body.to_string());
    }
    let state = state.clone();
    let pieces = ["Hello", ", ", "world!"];
    let events = futures_util::stream::unfold(0usize, move |index| {
        let state = state.clone();
        async move {
            if index > pieces.len() {
                return None;
            }
            if index > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let event = match pieces.get(index) {
                Some(piece) => {
                    state.sse_sent.lock().unwrap().push(Instant::now());
                    let chunk = serde_json::json!({
                        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                        "model": "fake-model",
                        "choices": [{ "index": 0, "delta": { "content": piece }, "finish_reason": null }],
                    });
                    format!("data: {chunk}\n\n")
                }
                None => "data: [DONE]\n\n".to_owned(),
            };
            Some((Ok::<_, std::io::Error>(Bytes::from(event)), index + 1))
        }
    });
    event_stream(Body::from_bytes_stream(events))
}

/// A body no compressor or chunk boundary could fake: every byte depends on its position.
pub fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index % 251) as u8 ^ (index / 251 % 256) as u8).collect()
}

/// A port on which nothing listens (bound, then released): connecting is refused.
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("an address")
}

/// A server that accepts every connection and closes it at once, without a byte.
pub async fn hanging_up() -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    (addr, task)
}

/// A listening socket whose accept queue is full and never drained: Linux drops further SYNs, so a new
/// connection neither succeeds nor fails until the connecting side gives up. Returns the address and what
/// must stay alive meanwhile; `None` when the queue could not be filled (then the test says so).
pub async fn unanswered_port() -> Option<(SocketAddr, Vec<tokio::net::TcpStream>, tokio::net::TcpListener)> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind("127.0.0.1:0".parse().ok()?).ok()?;
    let listener = socket.listen(0).ok()?;
    let addr = listener.local_addr().ok()?;
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(_)) => return None,
            // This one hangs: the queue is full.
            Err(_) => return Some((addr, fillers, listener)),
        }
    }
    None
}

/// `openssl s_server` on `127.0.0.1` with a fresh self-signed certificate: a TLS upstream no public root
/// vouches for. Killed on drop.
pub struct UntrustedTls {
    /// Where it listens.
    pub addr: SocketAddr,
    child: std::process::Child,
    // Last field: removed after `Drop::drop` stopped the server.
    _dir: sidekey_test_support::TempDir,
}

impl UntrustedTls {
    /// Starts one; `None` when `openssl` is not installed (the test then says so).
    pub async fn start() -> Option<Self> {
        let dir = sidekey_test_support::TempDir::try_new("tls").ok()?;
        let generated = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
            ])
            .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .output()
            .ok()?;
        if !generated.status.success() {
            return None;
        }
        let addr = closed_port().await;
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("-key")
            .arg(dir.path().join("key.pem"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { addr, child, _dir: dir };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for UntrustedTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
