//! Graceful shutdown: stop accepting, finish what is in flight, end without error.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sidekey_tests::{SECRET_KEY_ID, spawn_app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Ample for a loopback server with nothing left to do; far below the 30-second grace period, so a
/// shutdown that waits out the grace fails the test.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn shutdown_finishes_an_in_flight_response_then_refuses_connections() {
    let app = spawn_app().await;
    let addr = app.addr;

    // /docs is a page of more than a megabyte: start it and read only the beginning, so the server is
    // still writing it when the shutdown begins.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /docs HTTP/1.1\r\nHost: sidekey\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut received = vec![0u8; 4096];
    let first = stream.read(&mut received).await.unwrap();
    received.truncate(first);
    let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("a Content-Length");
    let head_len = head.find("\r\n\r\n").unwrap() + 4;
    assert!(length > 1 << 20, "the page is too small to still be in flight: {length} bytes");

    let shutdown = tokio::spawn(app.try_shutdown());
    let mut rest = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut rest))
        .await
        .expect("the response finishes")
        .unwrap();
    assert_eq!(received.len() - head_len + rest.len(), length, "the in-flight response was cut short");

    let result = tokio::time::timeout(PROMPT, shutdown).await.expect("shutdown returns promptly").unwrap();
    assert_eq!(result, Ok(()));
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the port still accepts connections after shutdown");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_keep_alive_connections() {
    let app = spawn_app().await;
    let addr = app.addr;
    // The client keeps its connection open in its pool after these answers.
    let client = app.client.clone();
    let issued = app.issue_token(SECRET_KEY_ID, None).await;
    assert_eq!(app.verify(&issued.token).await.status(), StatusCode::OK);

    let result = tokio::time::timeout(PROMPT, app.try_shutdown())
        .await
        .expect("shutdown waited on an idle connection");
    assert_eq!(result, Ok(()));
    assert!(TcpStream::connect(addr).await.is_err(), "the port still accepts connections after shutdown");
    let after = client.request(Method::GET, format!("http://{addr}/healthz")).send().await;
    assert!(after.is_err(), "a request after shutdown got an answer: {:?}", after.map(|r| r.status()));
}
