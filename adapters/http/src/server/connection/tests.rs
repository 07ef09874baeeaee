//! One connection over an in-memory pipe, on tokio's paused clock: each test runs its hours of
//! timeouts in milliseconds, and asserts the instant a connection ends to the millisecond.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::super::limit::ConnectionLimit;
use super::*;

const TIMEOUTS: Timeouts = Timeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(60) };
const MAX_HEADER_BYTES: u32 = 16 * 1024;
/// How late a timer may fire on the paused clock (tokio's wheel has millisecond slots).
const TIMER_SLACK: Duration = Duration::from_millis(2);

type TestBody = BoxBody<Bytes, Infallible>;

/// `GET /stream` answers a first chunk at once, then nothing for two idle timeouts, then a last chunk;
/// anything else answers `ok`.
#[derive(Clone)]
struct TestService;

impl hyper::service::Service<Request<Incoming>> for TestService {
    type Response = Response<TestBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let streamed = request.uri().path() == "/stream";
        Box::pin(async move {
            if !streamed {
                return Ok(Response::new(Full::new(Bytes::from_static(b"ok")).boxed()));
            }
            let chunks = futures_util::stream::unfold(0, |sent| async move {
                match sent {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"first;"))), 1)),
                    1 => {
                        tokio::time::sleep(TIMEOUTS.idle * 2).await;
                        Some((Ok(Frame::data(Bytes::from_static(b"last;"))), 2))
                    }
                    _ => None,
                }
            });
            Ok(Response::new(BodyExt::boxed(StreamBody::new(chunks))))
        })
    }
}

struct Served {
    client: DuplexStream,
    // Dropping the sender is a shutdown too: each test keeps it.
    ended: JoinHandle<(Result<Ending, ConnectionError>, Instant)>,
    shutdown: watch::Sender<bool>,
    limit: Arc<ConnectionLimit>,
}

/// One connection served over a pipe; `ended` completes with how and when it ended.
fn serve_one() -> Served {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let limit = ConnectionLimit::new(1);
    let permit = limit.try_acquire().unwrap();
    let protocols = Arc::new(Protocols::new(TIMEOUTS, MAX_HEADER_BYTES));
    let (shutdown, signal) = watch::channel(false);
    let ended = tokio::spawn(async move {
        let ending = serve(server, TestService, protocols, signal, permit).await;
        (ending, Instant::now())
    });
    Served { client, ended, shutdown, limit }
}

/// Reads until `needle` has arrived, or the connection ends; everything read.
async fn read_until(client: &mut DuplexStream, needle: &str) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains(needle) {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => received.extend_from_slice(&chunk[..read]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Whether the server closed its side: a read returns end-of-file (or an error).
async fn closed(client: &mut DuplexStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(client.read(&mut byte).await, Ok(0) | Err(_))
}

fn assert_at(ended: Instant, expected: Instant, what: &str) {
    assert!(ended >= expected, "{what}: ended {:?} early", expected - ended);
    assert!(ended <= expected + TIMER_SLACK, "{what}: ended {:?} late", ended - expected);
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: sidekey\r\n\r\n";

#[tokio::test(start_paused = true)]
async fn a_head_sent_a_byte_every_three_seconds_is_cut_at_the_header_timeout() {
    let Served { mut client, ended, shutdown: _shutdown, .. } = serve_one();
    let started = Instant::now();
    client.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").await.unwrap();
    let dribble = tokio::spawn(async move {
        // Each byte is activity: the idle clock never runs out, only the header one does.
        while client.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    });
    let (ending, at) = ended.await.unwrap();
    assert_eq!(ending.unwrap(), Ending::Cut);
    assert_at(at, started + TIMEOUTS.header_read, "the slow head");
    dribble.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_may_wait_past_the_header_timeout_and_is_closed_after_the_idle_one() {
    let Served { mut client, ended, shutdown: _shutdown, .. } = serve_one();
    client.write_all(GET).await.unwrap();
    assert!(read_until(&mut client, "ok").await.starts_with("HTTP/1.1 200"));
    // Three header timeouts without a byte: waiting for the next request is idleness, not a slow head.
    tokio::time::sleep(TIMEOUTS.header_read * 3).await;
    client.write_all(GET).await.unwrap();
    assert!(read_until(&mut client, "ok").await.starts_with("HTTP/1.1 200"), "still open, still served");
    let answered = Instant::now();
    assert!(closed(&mut client).await, "closed once idle");
    let (ending, at) = ended.await.unwrap();
    assert_eq!(ending.unwrap(), Ending::Closed, "closed by hyper, gracefully");
    assert_at(at, answered + TIMEOUTS.idle, "the idle connection");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout() {
    let Served { mut client, ended, limit, shutdown: _shutdown } = serve_one();
    let started = Instant::now();
    assert_eq!(limit.open(), 1);
    assert!(closed(&mut client).await);
    let (ending, at) = ended.await.unwrap();
    assert_eq!(ending.unwrap(), Ending::Cut);
    assert_at(at, started + TIMEOUTS.idle, "the silent connection");
    assert_eq!(limit.open(), 0, "its place under the cap is given back");
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_silent_longer_than_the_idle_timeout_is_not_cut() {
    let Served { mut client, ended, shutdown: _shutdown, .. } = serve_one();
    client.write_all(b"GET /stream HTTP/1.1\r\nHost: sidekey\r\n\r\n").await.unwrap();
    assert!(read_until(&mut client, "first;").await.starts_with("HTTP/1.1 200"));
    let first = Instant::now();
    let rest = read_until(&mut client, "0\r\n\r\n").await;
    assert!(rest.contains("last;"), "the answer went on after its silence: {rest:?}");
    assert!(Instant::now() >= first + TIMEOUTS.idle * 2);
    let finished = Instant::now();
    let (ending, at) = ended.await.unwrap();
    assert_eq!(ending.unwrap(), Ending::Closed);
    assert_at(at, finished + TIMEOUTS.idle, "idle after the answer");
}

#[tokio::test(start_paused = true)]
async fn a_head_over_the_limit_gets_431_and_one_under_it_is_served() {
    let Served { mut client, shutdown: _shutdown, .. } = serve_one();
    let under = format!("GET / HTTP/1.1\r\nHost: sidekey\r\nX-Fill: {}\r\n\r\n", "a".repeat(15_000));
    client.write_all(under.as_bytes()).await.unwrap();
    assert!(read_until(&mut client, "ok").await.starts_with("HTTP/1.1 200"));

    let Served { mut client, ended, shutdown: _shutdown, .. } = serve_one();
    let over = format!("GET / HTTP/1.1\r\nHost: sidekey\r\nX-Fill: {}\r\n\r\n", "a".repeat(17_000));
    client.write_all(over.as_bytes()).await.unwrap();
    let answer = read_until(&mut client, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(closed(&mut client).await, "and the connection is closed");
    assert!(ended.await.unwrap().0.is_err(), "hyper reports the oversized head");
}

#[tokio::test(start_paused = true)]
async fn on_shutdown_an_answer_in_flight_finishes_and_then_the_connection_closes() {
    let Served { mut client, ended, shutdown, .. } = serve_one();
    client.write_all(b"GET /stream HTTP/1.1\r\nHost: sidekey\r\n\r\n").await.unwrap();
    assert!(read_until(&mut client, "first;").await.starts_with("HTTP/1.1 200"));
    shutdown.send_replace(true);
    let rest = read_until(&mut client, "0\r\n\r\n").await;
    assert!(rest.contains("last;"), "{rest:?}");
    assert!(closed(&mut client).await);
    assert_eq!(ended.await.unwrap().0.unwrap(), Ending::Closed);

    let Served { client: _idle, ended, shutdown, .. } = serve_one();
    tokio::task::yield_now().await;
    let signalled = Instant::now();
    shutdown.send_replace(true);
    let (ending, at) = ended.await.unwrap();
    assert_eq!(ending.unwrap(), Ending::Closed);
    assert_eq!(at, signalled, "an idle connection closes at once");
}

/// An HTTP/2 client (prior knowledge) over the pipe.
async fn http2_client(
    client: DuplexStream,
) -> (hyper::client::conn::http2::SendRequest<Full<Bytes>>, JoinHandle<Result<(), hyper::Error>>) {
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client)).await.unwrap();
    (sender, tokio::spawn(connection))
}

fn http2_get(header_bytes: usize) -> Request<Full<Bytes>> {
    Request::get("http://sidekey/")
        .header("x-fill", "a".repeat(header_bytes))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn http2_is_served_and_a_header_list_over_the_limit_gets_431_on_its_own_stream() {
    let Served { client, shutdown: _shutdown, .. } = serve_one();
    let (mut sender, _connection) = http2_client(client).await;
    let served = sender.send_request(http2_get(100)).await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.into_body().collect().await.unwrap().to_bytes(), "ok");

    let refused = sender.send_request(http2_get(MAX_HEADER_BYTES as usize)).await;
    match refused {
        Ok(response) => assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(error) => panic!("the client sees an error rather than 431: {error}"),
    }
    let again = sender.send_request(http2_get(100)).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "the connection goes on");
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let Served { client, ended, shutdown: _shutdown, .. } = serve_one();
    let (mut sender, connection) = http2_client(client).await;
    let served = sender.send_request(http2_get(100)).await.unwrap();
    served.into_body().collect().await.unwrap();
    let answered = Instant::now();
    let (ending, at) = ended.await.unwrap();
    // The client closes on the GOAWAY, so the server may find the pipe already gone for its last frames.
    assert!(!matches!(ending, Ok(Ending::Cut)), "closed with a GOAWAY, not cut");
    assert_at(at, answered + TIMEOUTS.idle, "the idle HTTP/2 connection");
    connection.await.unwrap().expect("the client saw a clean close");
    assert!(sender.send_request(http2_get(100)).await.is_err(), "and sends nothing more on it");
}

#[tokio::test(start_paused = true)]
async fn a_connection_stuck_in_the_http2_preface_is_cut_at_the_header_timeout() {
    let Served { mut client, ended, shutdown: _shutdown, .. } = serve_one();
    let started = Instant::now();
    client.write_all(&HTTP2_PREFACE[..10]).await.unwrap();
    let (ending, at) = ended.await.unwrap();
    assert_eq!(ending.unwrap(), Ending::Cut);
    assert_at(at, started + TIMEOUTS.header_read, "the unfinished preface");
}
