//! The fake upstream: a real HTTP server (poem) on `127.0.0.1:0` that records every request it receives
//! and answers by path, whatever prefix (an upstream's base path) comes before it:
//! - `…/sse?n=N&gap_ms=MS`: `N` server-sent events, the first at once, then one every `MS`, each emission
//!   time recorded ([`FakeUpstream::sse_sent`]);
//! - `…/forever`: an event every 100 ms until the connection goes; when the stream is dropped it says so
//!   ([`FakeUpstream::stream_dropped`]);
//! - `…/sleep?ms=MS`: waits `MS` before its headers;
//! - `…/status/CODE`: answers `CODE` with a JSON body of its own;
//! - `…/big?len=N`: answers `N` bytes of [`patterned`] data, streamed in 64 KiB chunks;
//! - `POST …/chat/completions`: an OpenAI-compatible chat completion, whole, or with `"stream": true` as three
//!   `chat.completion.chunk` events `gap_ms` apart (default 200), a finishing chunk and `data: [DONE]`;
//!   with `stream_options.include_usage` every chunk carries `"usage": null` and a usage-only chunk
//!   (`"choices": []`) comes before `[DONE]`, as OpenAI's API does;
//! - `POST …/responses`: an OpenAI Responses answer, whole or streamed (`response.created`, text deltas,
//!   `response.completed` with the usage);
//! - `POST …/v1/messages`: an Anthropic Messages answer, whole or streamed (`message_start` with the input
//!   usage, text deltas, `message_delta` with the output usage, `message_stop`);
//! - the three LLM answers report known usage ([`CHAT_USAGE`], [`RESPONSES_USAGE`], [`ANTHROPIC_USAGE`]),
//!   or `?input_tokens=N&output_tokens=M`; `?cut_after=N` breaks a stream off after `N` events (the
//!   connection is dropped without the stream's end); every streamed answer's bytes are recorded as sent
//!   ([`FakeUpstream::streamed`]);
//! - `…/upload`: reads the body chunk by chunk, says when the first chunk arrived
//!   ([`FakeUpstream::first_chunk`]), and answers `{"len": …}`;
//! - `?hold=1` on any path but `…/upload`: the request is recorded, then its answer waits until
//!   [`FakeUpstream::release`];
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
    /// The bytes of each streamed LLM answer, as sent, in the order the streams started.
    streamed: Mutex<Vec<Vec<u8>>>,
    stream_dropped: watch::Sender<Option<Instant>>,
    first_chunk: watch::Sender<Option<Instant>>,
    /// Whether requests with `?hold=1` may be answered.
    released: watch::Sender<bool>,
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

    /// Lets every request held by `?hold=1` (now and later) be answered.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    /// The bytes of every streamed LLM answer so far, each exactly as it left the upstream.
    pub fn streamed(&self) -> Vec<Vec<u8>> {
        self.state.streamed.lock().unwrap().clone()
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
        let body = seen.body.clone();
        state.seen.lock().unwrap().push(seen);
        if query_number(&request, "hold", 0) == 1 {
            // Recorded, then held: the test decides when the answer may start.
            let mut released = state.released.subscribe();
            let _ = released.wait_for(|released| *released).await;
        }

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
        // Only a POST generates: a GET of the same path lists or retrieves (and reports no usage).
        if let Some(api) = Api::of(&path).filter(|_| request.method() == poem::http::Method::POST) {
            let asked = Asked::of(&request, &body, api);
            return Ok(asked.answer(&state));
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

/// Token usage an answer reports, as sidekey should meter it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// All billed input tokens.
    pub input: u64,
    /// All output tokens.
    pub output: u64,
}

/// What a chat completion reports by default (`prompt_tokens`, `completion_tokens`).
pub const CHAT_USAGE: Reported = Reported { input: 17, output: 5 };
/// What a Responses answer reports by default.
pub const RESPONSES_USAGE: Reported = Reported { input: 23, output: 9 };
/// What an Anthropic message reports by default: 31 uncached input tokens, [`ANTHROPIC_CACHE_WRITE`]
/// written to and [`ANTHROPIC_CACHE_READ`] read from the cache (all three billed input), 11 output.
pub const ANTHROPIC_USAGE: Reported = Reported { input: 37, output: 11 };
/// Input tokens an Anthropic answer reports as written to the cache.
const ANTHROPIC_CACHE_WRITE: u64 = 2;
/// Input tokens an Anthropic answer reports as read from the cache.
const ANTHROPIC_CACHE_READ: u64 = 4;
/// The output count of an Anthropic stream's `message_start`, before any text (as the API sends it).
pub const ANTHROPIC_START_OUTPUT: u64 = 1;

/// The text every LLM answer carries, in the pieces its streams send.
const PIECES: [&str; 3] = ["Hello", ", ", "world!"];

/// The LLM APIs the fake upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Responses,
    AnthropicMessages,
}

impl Api {
    fn of(path: &str) -> Option<Self> {
        if path.ends_with("/chat/completions") {
            Some(Self::Chat)
        } else if path.ends_with("/responses") {
            Some(Self::Responses)
        } else if path.ends_with("/v1/messages") {
            Some(Self::AnthropicMessages)
        } else {
            None
        }
    }

    fn default_usage(self) -> Reported {
        match self {
            Self::Chat => CHAT_USAGE,
            Self::Responses => RESPONSES_USAGE,
            Self::AnthropicMessages => ANTHROPIC_USAGE,
        }
    }
}

/// One LLM request as the fake upstream reads it.
struct Asked {
    api: Api,
    model: String,
    stream: bool,
    include_usage: bool,
    usage: Reported,
    gap: Duration,
    cut_after: Option<usize>,
}

impl Asked {
    fn of(request: &Request, body: &[u8], api: Api) -> Self {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let default = api.default_usage();
        Self {
            api,
            model: json["model"].as_str().unwrap_or("fake-model").to_owned(),
            stream: json["stream"].as_bool().unwrap_or(false),
            include_usage: json["stream_options"]["include_usage"].as_bool().unwrap_or(false),
            usage: Reported {
                input: query_number(request, "input_tokens", default.input),
                output: query_number(request, "output_tokens", default.output),
            },
            gap: Duration::from_millis(query_number(request, "gap_ms", 200)),
            cut_after: usize::try_from(query_number(request, "cut_after", u64::MAX)).ok(),
        }
    }

    fn answer(&self, state: &Arc<State>) -> Response {
        if !self.stream {
            let body = match self.api {
                Api::Chat => self.chat_json(),
                Api::Responses => self.responses_json(),
                Api::AnthropicMessages => self.anthropic_json(),
            };
            return Response::builder().content_type("application/json").body(body.to_string());
        }
        let events = match self.api {
            Api::Chat => self.chat_events(),
            Api::Responses => self.responses_events(),
            Api::AnthropicMessages => self.anthropic_events(),
        };
        scripted_stream(state, events, self.gap, self.cut_after)
    }

    fn chat_usage(&self) -> serde_json::Value {
        let Reported { input, output } = self.usage;
        serde_json::json!({ "prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output })
    }

    fn chat_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": self.model,
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": PIECES.concat() } }],
            "usage": self.chat_usage(),
        })
    }

    /// The chunks, each a whole event: one per piece, a finishing one, the usage-only chunk when asked
    /// for, and `[DONE]`.
    fn chat_events(&self) -> Vec<Event> {
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let mut chunk = serde_json::json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            if self.include_usage {
                chunk["usage"] = serde_json::Value::Null;
            }
            chunk
        };
        let mut events: Vec<Event> = PIECES
            .iter()
            .map(|piece| {
                Event::piece(format!("data: {}\n\n", chunk(serde_json::json!({ "content": piece }), None)))
            })
            .collect();
        events.push(Event::other(format!("data: {}\n\n", chunk(serde_json::json!({}), Some("stop")))));
        if self.include_usage {
            let usage = serde_json::json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": [], "usage": self.chat_usage(),
            });
            events.push(Event::other(format!("data: {usage}\n\n")));
        }
        events.push(Event::other("data: [DONE]\n\n".to_owned()));
        events
    }

    fn response(&self, status: &str, usage: serde_json::Value) -> serde_json::Value {
        let output = if status == "completed" {
            serde_json::json!([{
                "type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                "content": [{ "type": "output_text", "text": PIECES.concat(), "annotations": [] }],
            }])
        } else {
            serde_json::json!([])
        };
        serde_json::json!({
            "id": "resp_fake", "object": "response", "created_at": 0, "status": status,
            "model": self.model, "output": output, "usage": usage,
        })
    }

    fn responses_usage(&self) -> serde_json::Value {
        let Reported { input, output } = self.usage;
        serde_json::json!({
            "input_tokens": input, "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": output, "output_tokens_details": { "reasoning_tokens": 0 },
            "total_tokens": input + output,
        })
    }

    fn responses_json(&self) -> serde_json::Value {
        self.response("completed", self.responses_usage())
    }

    fn responses_events(&self) -> Vec<Event> {
        let event = |kind: &str, data: serde_json::Value| format!("event: {kind}\ndata: {data}\n\n");
        let mut events = vec![Event::other(event(
            "response.created",
            serde_json::json!({ "type": "response.created", "sequence_number": 0,
                                "response": self.response("in_progress", serde_json::Value::Null) }),
        ))];
        for (index, piece) in PIECES.iter().enumerate() {
            events.push(Event::piece(event(
                "response.output_text.delta",
                serde_json::json!({ "type": "response.output_text.delta", "sequence_number": index + 1,
                                    "item_id": "msg_fake", "output_index": 0, "content_index": 0,
                                    "delta": piece }),
            )));
        }
        events.push(Event::other(event(
            "response.completed",
            serde_json::json!({ "type": "response.completed", "sequence_number": PIECES.len() + 1,
                                "response": self.responses_json() }),
        )));
        events
    }

    /// The input split as Anthropic reports it: uncached, cache writes, cache reads.
    fn anthropic_input(&self) -> (u64, u64, u64) {
        let write = ANTHROPIC_CACHE_WRITE.min(self.usage.input);
        let read = ANTHROPIC_CACHE_READ.min(self.usage.input - write);
        (self.usage.input - write - read, write, read)
    }

    fn anthropic_usage(&self, output: u64) -> serde_json::Value {
        let (uncached, write, read) = self.anthropic_input();
        serde_json::json!({
            "input_tokens": uncached, "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read, "output_tokens": output,
        })
    }

    fn anthropic_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": self.model,
            "content": [{ "type": "text", "text": PIECES.concat() }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": self.anthropic_usage(self.usage.output),
        })
    }

    fn anthropic_events(&self) -> Vec<Event> {
        let event = |kind: &str, data: serde_json::Value| format!("event: {kind}\ndata: {data}\n\n");
        let start = serde_json::json!({
            "type": "message_start",
            "message": { "id": "msg_fake", "type": "message", "role": "assistant", "model": self.model,
                         "content": [], "stop_reason": null, "stop_sequence": null,
                         "usage": self.anthropic_usage(ANTHROPIC_START_OUTPUT) },
        });
        let mut events = vec![
            Event::other(event("message_start", start)),
            Event::other(event(
                "content_block_start",
                serde_json::json!({ "type": "content_block_start", "index": 0,
                                    "content_block": { "type": "text", "text": "" } }),
            )),
            Event::other(event("ping", serde_json::json!({ "type": "ping" }))),
        ];
        for piece in PIECES {
            events.push(Event::piece(event(
                "content_block_delta",
                serde_json::json!({ "type": "content_block_delta", "index": 0,
                                    "delta": { "type": "text_delta", "text": piece } }),
            )));
        }
        events.push(Event::other(event(
            "content_block_stop",
            serde_json::json!({ "type": "content_block_stop", "index": 0 }),
        )));
        events.push(Event::other(event(
            "message_delta",
            serde_json::json!({ "type": "message_delta",
                                "delta": { "stop_reason": "end_turn", "stop_sequence": null },
                                "usage": { "output_tokens": self.usage.output } }),
        )));
        events.push(Event::other(event("message_stop", serde_json::json!({ "type": "message_stop" }))));
        events
    }
}

/// One whole server-sent event of a scripted stream.
#[derive(Clone)]
struct Event {
    text: String,
    /// A piece of the generated text: its emission time is recorded ([`FakeUpstream::sse_sent`]) and the
    /// stream waits `gap_ms` before it (but the first).
    piece: bool,
}

impl Event {
    fn piece(text: String) -> Self {
        Self { text, piece: true }
    }

    fn other(text: String) -> Self {
        Self { text, piece: false }
    }
}

/// Streams `events`, waiting `gap` before every text piece but the first, and recording the bytes as
/// they leave. With `cut_after`, the answer declares the whole stream's `Content-Length` but ends after
/// that many events: the server then closes the connection short of the length, as an upstream that
/// crashes mid-answer. (A failing chunked body would not do: poem's server ends it with the last chunk,
/// which makes a cut stream look complete.)
fn scripted_stream(
    state: &Arc<State>,
    events: Vec<Event>,
    gap: Duration,
    cut_after: Option<usize>,
) -> Response {
    let whole_length: usize = events.iter().map(|event| event.text.len()).sum();
    let index = {
        let mut streamed = state.streamed.lock().unwrap();
        streamed.push(Vec::new());
        streamed.len() - 1
    };
    let state = state.clone();
    let events = Arc::new(events);
    let stream = futures_util::stream::unfold((0usize, false), move |(position, first_piece_sent)| {
        let (state, events) = (state.clone(), events.clone());
        async move {
            if cut_after.is_some_and(|cut| position >= cut) {
                return None;
            }
            let event = events.get(position)?;
            if event.piece && first_piece_sent {
                tokio::time::sleep(gap).await;
            }
            if event.piece {
                state.sse_sent.lock().unwrap().push(Instant::now());
            }
            state.streamed.lock().unwrap()[index].extend_from_slice(event.text.as_bytes());
            let bytes = Bytes::from(event.text.clone());
            Some((Ok::<_, std::io::Error>(bytes), (position + 1, first_piece_sent || event.piece)))
        }
    });
    let mut response = event_stream(Body::from_bytes_stream(stream));
    if cut_after.is_some() {
        response.headers_mut().insert("content-length", whole_length.into());
    }
    response
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
