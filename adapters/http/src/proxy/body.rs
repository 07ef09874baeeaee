//! The two bodies that stream through the proxy, each frame passed on as soon as it arrives.
//!
//! - [`RequestBody`]: the client's body on its way upstream, counted against the upstream's limit. Going
//!   over it fails the upstream request; the route then answers 413 (the counter, not the upstream's
//!   error, says why, so even a body without `Content-Length` gets its 413).
//! - [`ResponseBody`]: the upstream's body on its way to the client, cut when the upstream stays silent
//!   longer than the idle timeout. Dropping it (the client went away) drops hyper's response, which
//!   closes the upstream connection (HTTP/1.1) or resets the stream (HTTP/2): the upstream stops work.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// What became of a request body, shared between the body (inside hyper) and the route.
#[derive(Debug, Clone, Default)]
pub struct BodyOutcome(Arc<AtomicU8>);

// 0, the default, is a body that ended well (or has not ended yet).
const BODY_TOO_LARGE: u8 = 1;
const BODY_UNREADABLE: u8 = 2;

impl BodyOutcome {
    /// Whether the body went over its limit.
    pub fn too_large(&self) -> bool {
        self.0.load(Ordering::Acquire) == BODY_TOO_LARGE
    }

    /// Whether reading the client's body failed (it disconnected, or sent a malformed chunk).
    pub fn unreadable(&self) -> bool {
        self.0.load(Ordering::Acquire) == BODY_UNREADABLE
    }

    fn set(&self, outcome: u8) {
        self.0.store(outcome, Ordering::Release);
    }
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// More bytes than the limit.
    #[error("the request body is larger than the upstream's limit")]
    TooLarge,
    /// The client's body could not be read.
    #[error("the client's request body could not be read: {0}")]
    Client(io::Error),
}

/// The client's request body, streamed upstream with a byte limit.
pub struct RequestBody {
    inner: BoxBody<Bytes, io::Error>,
    remaining: u64,
    outcome: BodyOutcome,
}

impl RequestBody {
    /// Wraps `inner`, allowing at most `limit` bytes; `outcome` learns how it ended.
    pub fn new(inner: BoxBody<Bytes, io::Error>, limit: u64, outcome: BodyOutcome) -> Self {
        Self { inner, remaining: limit, outcome }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.remaining = 0;
                        this.outcome.set(BODY_TOO_LARGE);
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.outcome.set(BODY_UNREADABLE);
                Poll::Ready(Some(Err(RequestBodyError::Client(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream's response body, streamed to the client with an idle timeout.
pub struct ResponseBody {
    inner: Incoming,
    idle: Duration,
    /// When the upstream will have been silent too long; pushed back by every frame.
    deadline: Pin<Box<Sleep>>,
    /// For the log line when the stream breaks.
    upstream: Arc<str>,
}

impl ResponseBody {
    /// Wraps the upstream's body.
    pub fn new(inner: Incoming, idle: Duration, upstream: Arc<str>) -> Self {
        Self { inner, idle, deadline: Box::pin(tokio::time::sleep(idle)), upstream }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                // The client sees its response end abruptly (no final chunk), the truthful signal: the
                // status line has long gone out.
                tracing::warn!(upstream = %this.upstream, %error, "the upstream's response body broke off");
                Poll::Ready(Some(Err(io::Error::other(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::warn!(
                        upstream = %this.upstream,
                        idle_ms = this.idle.as_millis() as u64,
                        "the upstream's response body stalled; cut"
                    );
                    Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the upstream sent nothing within the idle timeout",
                    ))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn chunks(sizes: &[usize]) -> BoxBody<Bytes, io::Error> {
        let frames: Vec<Result<Frame<Bytes>, io::Error>> =
            sizes.iter().map(|size| Ok(Frame::data(Bytes::from(vec![b'x'; *size])))).collect();
        BoxBody::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes_whole() {
        let outcome = BodyOutcome::default();
        let body = RequestBody::new(chunks(&[3, 4, 3]), 10, outcome.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 10);
        assert!(!outcome.too_large() && !outcome.unreadable());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_fails_at_the_chunk_that_crosses_it() {
        let outcome = BodyOutcome::default();
        let mut body = RequestBody::new(chunks(&[6, 5, 100]), 10, outcome.clone());
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap().len(), 6);
        assert!(matches!(body.frame().await, Some(Err(RequestBodyError::TooLarge))));
        assert!(outcome.too_large());
    }

    #[tokio::test]
    async fn a_broken_client_body_is_reported_as_unreadable() {
        let frames: Vec<Result<Frame<Bytes>, io::Error>> = vec![Err(io::Error::other("reset"))];
        let outcome = BodyOutcome::default();
        let mut body = RequestBody::new(
            BoxBody::new(StreamBody::new(futures_util::stream::iter(frames))),
            10,
            outcome.clone(),
        );
        assert!(matches!(body.frame().await, Some(Err(RequestBodyError::Client(_)))));
        assert!(outcome.unreadable());
    }
}
