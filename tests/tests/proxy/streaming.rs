//! Bodies stream both ways without buffering; the request body limit; cancellation; stalled streams.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use sidekey_tests::{IssuedToken, SECRET_KEY_ID, TestApp, assert_problem, header, raw_http, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::upstream::{FakeUpstream, patterned};
use super::{app_with, upstream_config};

/// How late an event may reach the client after the upstream sent it: loopback takes microseconds, so
/// this only absorbs scheduling on a loaded CI machine; buffering would show as a whole gap (300 ms).
const ARRIVAL_SLACK: Duration = Duration::from_millis(150);

/// A `Transfer-Encoding: chunked` request head for `path`.
fn chunked_head(app: &TestApp, path: &str, token: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr
    )
    .into_bytes()
}

/// `body` as HTTP/1.1 chunks of `chunk` bytes, with the final empty chunk.
fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(body.len() + body.len() / chunk * 12 + 8);
    for piece in body.chunks(chunk) {
        encoded.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        encoded.extend_from_slice(piece);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

#[tokio::test]
async fn server_sent_events_reach_the_client_one_by_one_as_the_upstream_emits_them() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let mut response = send(
        app.request(Method::POST, "/v1/proxy/openai/v1/chat/sse?n=3&gap_ms=300", Some(&issued.token))
            .header("accept", "text/event-stream")
            .body(r#"{"stream":true}"#),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type").as_deref(), Some("text/event-stream"));
    let mut arrivals = Vec::new();
    let mut received = String::new();
    while let Some(chunk) = response.chunk().await.expect("the stream continues") {
        let now = Instant::now();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
        // An event is complete at its blank line; count the ones this chunk completed.
        while arrivals.len() < received.matches("\n\n").count() {
            arrivals.push(now);
        }
    }
    assert_eq!(received, "data: {\"index\":0}\n\ndata: {\"index\":1}\n\ndata: {\"index\":2}\n\n");
    let sent = upstream.sse_sent();
    assert_eq!((sent.len(), arrivals.len()), (3, 3));
    for (index, (sent, arrived)) in sent.iter().zip(&arrivals).enumerate() {
        let late = arrived.saturating_duration_since(*sent);
        assert!(late < ARRIVAL_SLACK, "event {index} reached the client {late:?} after the upstream sent it");
    }
    // The first event was in the client's hands long before the upstream had even written the last.
    assert!(
        arrivals[0] + Duration::from_millis(450) < sent[2],
        "events were held back: {arrivals:?} vs {sent:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_five_mib_chunked_request_body_streams_upstream_intact_before_the_client_has_finished() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("files", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let body = patterned(5 * 1024 * 1024);
    let encoded = chunked(&body, 64 * 1024);

    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(&chunked_head(&app, "/v1/proxy/files/upload", &issued.token)).await.unwrap();
    // The first megabyte only: the upstream must see bytes while the client still holds the rest.
    let (first, rest) = encoded.split_at(1024 * 1024);
    stream.write_all(first).await.unwrap();
    let first_chunk = upstream.first_chunk(Duration::from_secs(5)).await;
    assert!(
        first_chunk.is_some(),
        "the upstream saw no byte before the client finished: the body was buffered"
    );
    stream.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&format!("{{\"len\":{}}}", body.len())), "{answer}");

    let seen = upstream.only_request();
    assert!(seen.body == body, "the body arrived altered ({} bytes)", seen.body.len());
    assert_eq!(seen.header("content-length"), None);
    app.shutdown().await;
}

#[tokio::test]
async fn a_sized_request_body_keeps_its_length_and_a_large_response_body_streams_back_intact() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("files", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    let body = patterned(3 * 1024 * 1024);
    let response =
        send(app.request(Method::PUT, "/v1/proxy/files/upload", Some(&issued.token)).body(body.clone()))
            .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), format!("{{\"len\":{}}}", body.len()));
    let seen = upstream.only_request();
    assert_eq!(seen.header("content-length"), Some(body.len().to_string().as_str()));
    assert!(seen.body == body);

    let len = 8 * 1024 * 1024;
    let response =
        send(app.request(Method::GET, &format!("/v1/proxy/files/big?len={len}"), Some(&issued.token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = response.bytes().await.unwrap();
    assert!(
        received.as_ref() == patterned(len).as_slice(),
        "the response arrived altered ({} bytes)",
        received.len()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_payload_too_large_with_or_without_a_content_length() {
    let upstream = FakeUpstream::start().await;
    let mut config = upstream_config("files", &upstream.url(""), &[SECRET_KEY_ID]);
    config.max_request_body_bytes = 64 * 1024;
    let app = app_with(vec![config]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    // Declared: refused before the upstream hears of it.
    let response = send(app.request(Method::POST, "/v1/proxy/files/upload", Some(&issued.token)).body(vec![
            b'x';
            64 * 1024
                + 1
        ]))
    .await;
    assert_problem(response, 413, "payload_too_large").await;
    assert!(upstream.seen().is_empty());

    // Undeclared (chunked): counted as it streams, refused when it crosses the limit.
    let mut request = chunked_head(&app, "/v1/proxy/files/upload", &issued.token);
    request.extend_from_slice(&chunked(&patterned(80 * 1024), 8 * 1024));
    let response = raw_http(app.addr, &request).await;
    assert_eq!(response.status, 413, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.json()["code"], "payload_too_large");
    if let Some(seen) = upstream.seen().first() {
        assert!(seen.body.len() <= 64 * 1024, "the upstream got {} bytes past the limit", seen.body.len());
    }

    // At the limit exactly, both ways, it goes through.
    let response = send(
        app.request(Method::POST, "/v1/proxy/files/upload", Some(&issued.token)).body(vec![b'x'; 64 * 1024]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut request = chunked_head(&app, "/v1/proxy/files/upload", &issued.token);
    request.extend_from_slice(&chunked(&patterned(64 * 1024), 8 * 1024));
    assert_eq!(raw_http(app.addr, &request).await.status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_upstream_request() {
    let upstream = FakeUpstream::start().await;
    let app = app_with(vec![upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID])]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;

    let mut response =
        send(app.request(Method::GET, "/v1/proxy/openai/v1/forever", Some(&issued.token))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let first = response.chunk().await.unwrap().expect("a first event");
    assert!(first.starts_with(b"data: 0"));
    assert_eq!(
        upstream.stream_dropped(Duration::from_millis(300)).await,
        None,
        "the stream ended on its own"
    );
    let gone = Instant::now();
    drop(response);

    // The upstream notices at its next write (every 100 ms) at the latest.
    let dropped = upstream.stream_dropped(Duration::from_secs(3)).await;
    let dropped = dropped.expect("the upstream kept streaming to a client that had gone");
    assert!(dropped.saturating_duration_since(gone) < Duration::from_secs(2));
    app.shutdown().await;
}

/// The fake upstream as `openai`, behind an app that cuts a stream silent for 300 ms, and a token for it.
async fn behind_a_300_ms_idle_timeout() -> (FakeUpstream, TestApp, IssuedToken) {
    let upstream = FakeUpstream::start().await;
    let mut config = upstream_config("openai", &upstream.url(""), &[SECRET_KEY_ID]);
    config.idle_timeout_ms = 300;
    let app = app_with(vec![config]).await;
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    (upstream, app, issued)
}

/// Checks that `response` is a 200 whose first event arrived and whose body then failed: cut, not ended
/// as a complete one, and not continued.
async fn assert_cut_after_the_first_event(mut response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::OK);
    let first = response.chunk().await.unwrap().expect("the first event");
    assert!(first.starts_with(b"data: {\"index\":0}"));
    match response.chunk().await {
        Err(_) => {}
        Ok(None) => panic!("the cut stream ended like a complete one"),
        Ok(Some(chunk)) => panic!("the stalled stream went on: {chunk:?}"),
    }
}

#[tokio::test]
async fn a_stream_that_stalls_longer_than_the_idle_timeout_is_cut() {
    let (_upstream, app, issued) = behind_a_300_ms_idle_timeout().await;

    // Gaps within the idle timeout are fine...
    let response =
        send(app.request(Method::GET, "/v1/proxy/openai/sse?n=3&gap_ms=100", Some(&issued.token))).await;
    assert_eq!(response.text().await.unwrap().matches("data:").count(), 3);

    // ...a longer silence ends the response after what had arrived, long before the upstream's next event,
    // and abruptly: over HTTP/1.1 without the last chunk, so the client cannot take it for a complete one.
    // (poem's server wrote the last chunk after a body error; sidekey's own server, which replaced it,
    // does not.)
    let started = Instant::now();
    let response =
        send(app.request(Method::GET, "/v1/proxy/openai/sse?n=2&gap_ms=3000", Some(&issued.token))).await;
    assert_cut_after_the_first_event(response).await;
    assert!(started.elapsed() < Duration::from_secs(2), "cut after {:?}", started.elapsed());
    app.shutdown().await;
}

#[tokio::test]
async fn over_http2_a_stalled_stream_is_reset_not_ended() {
    let (_upstream, app, issued) = behind_a_300_ms_idle_timeout().await;
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();

    let response = client
        .get(app.url("/v1/proxy/openai/sse?n=2&gap_ms=3000"))
        .bearer_auth(&issued.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_cut_after_the_first_event(response).await;
    app.shutdown().await;
}
