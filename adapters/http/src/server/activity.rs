//! What one connection is doing, as far as its timeouts care: when bytes last moved, whether a request
//! is in flight, and since when a request head has been arriving.
//!
//! Three pieces write it: [`WatchedIo`] around the socket (every read or write that moves bytes),
//! [`Counted`] around the service (a request is in flight from the moment hyper hands its head over
//! until its response body has ended or been dropped, so a long stream from a silent upstream is never
//! idleness), and the response body it wraps, [`CountedBody`]. The connection's supervisor reads it with
//! [`Activity::check`] when its timer fires, and is woken early only when a head starts arriving (the
//! one event that brings a deadline forward). Nothing here takes a lock or starts a timer per byte.
//!
//! The clock is tokio's, so tests move it with `tokio::time::pause`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::limit::ConnectionPermit;

/// The two clocks of a connection with nothing in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the first byte of a request head to the whole head.
    pub header_read: Duration,
    /// Without a request in flight and without a byte either way.
    pub idle: Duration,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timeout {
    /// A request head started arriving and did not finish in time.
    HeaderRead,
    /// Nothing in flight and nothing moved in time.
    Idle,
}

impl Timeout {
    /// The label of `sidekey_connections_timed_out_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::HeaderRead => "header_read",
            Self::Idle => "idle",
        }
    }
}

/// What [`Activity::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// A clock ran out.
    Expired(Timeout),
    /// Nothing can run out before then (look again at that instant).
    WaitUntil(Instant),
}

/// One connection's activity, shared by its socket, its service, its response bodies and its supervisor.
#[derive(Debug)]
pub(super) struct Activity {
    /// The instant the offsets below count from.
    born: Instant,
    /// Nanoseconds after `born` of the last read or write that moved bytes, or of the last response's
    /// end (an answer that just ended is activity, even if its last bytes left earlier).
    last_io: AtomicU64,
    /// 1 + nanoseconds after `born` of the first byte read while no request was in flight; 0 when no
    /// head is arriving. On HTTP/1.1 such a byte can only begin the next request's head.
    head_since: AtomicU64,
    /// Requests handed to the service whose response has not ended.
    in_flight: AtomicUsize,
    /// Woken when a head starts arriving: the supervisor's next deadline moves earlier.
    head_started: Notify,
}

impl Activity {
    /// A connection accepted now.
    pub(super) fn new() -> Self {
        Self {
            born: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: Notify::new(),
        }
    }

    fn offset(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, offset: u64) -> Instant {
        self.born + Duration::from_nanos(offset)
    }

    /// Bytes arrived.
    fn received(&self) {
        let now = self.offset(Instant::now());
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.head_started.notify_one();
        }
    }

    /// Bytes left.
    fn sent(&self) {
        self.last_io.store(self.offset(Instant::now()), Ordering::Relaxed);
    }

    /// A whole request head reached the service: the request is in flight until the guard drops.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether no request is in flight.
    pub(super) fn is_quiet(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Completes when a request head starts arriving (or has since the last call).
    pub(super) async fn head_started(&self) {
        self.head_started.notified().await;
    }

    /// Whether a clock ran out at `now`, or until when nothing can.
    pub(super) fn check(&self, now: Instant, timeouts: Timeouts) -> Check {
        if !self.is_quiet() {
            // Nothing runs out while a request is in flight; its end is activity, so the idle clock
            // restarts from there. Look again one idle period from now.
            return Check::WaitUntil(now + timeouts.idle);
        }
        let idle_at = self.instant(self.last_io.load(Ordering::Relaxed)) + timeouts.idle;
        let head_at = self
            .head_since
            .load(Ordering::Relaxed)
            .checked_sub(1)
            .map(|since| self.instant(since) + timeouts.header_read);
        let (at, timeout) = match head_at {
            Some(head_at) if head_at < idle_at => (head_at, Timeout::HeaderRead),
            _ => (idle_at, Timeout::Idle),
        };
        if now >= at { Check::Expired(timeout) } else { Check::WaitUntil(at) }
    }
}

/// A request in flight; dropping it ends the request (its response ended, or it was abandoned).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The end of an answer restarts the idle clock: store it before the count says "quiet".
        self.0.sent();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The HTTP/2 connection preface: a connection that begins with it speaks HTTP/2 (prior knowledge).
pub(super) const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest a closing connection goes on reading what its client still sends (see [`WatchedIo`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most a closing connection reads and discards before it closes anyway.
const LINGER_BYTES: usize = 1024 * 1024;

/// The socket, recording every byte that moves in its connection's [`Activity`], and holding the
/// connection's place under the connection cap for as long as the socket lives (an upgraded connection
/// keeps the socket, and so its place).
///
/// It can also give back bytes already read: the ones read to tell HTTP/1.1 from HTTP/2 (at most the
/// preface's 24), so hyper sees the connection from its first byte.
///
/// Its shutdown lingers: a socket closed with unread input sends a reset, and the reset destroys an
/// answer not yet read, hyper's 431 to a client still sending its oversized head above all (one client
/// in sixteen lost it under a flood). So after the FIN, whatever the client still sends is read and
/// discarded until it closes too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`], as nginx's
/// `lingering_close` does. A client with nothing more to send costs nothing: the socket closes at once.
#[derive(Debug)]
pub(super) struct WatchedIo<I> {
    inner: I,
    activity: Arc<Activity>,
    replay: [u8; HTTP2_PREFACE.len()],
    replay_from: usize,
    replay_to: usize,
    /// Set once the FIN is sent.
    closing: Option<Lingering>,
    _permit: ConnectionPermit,
}

/// A shutdown reading what the client still sends.
#[derive(Debug)]
struct Lingering {
    discarded: usize,
    /// Started at the first byte discarded.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<I> WatchedIo<I> {
    pub(super) fn new(inner: I, activity: Arc<Activity>, permit: ConnectionPermit) -> Self {
        Self {
            inner,
            activity,
            replay: [0; HTTP2_PREFACE.len()],
            replay_from: 0,
            replay_to: 0,
            closing: None,
            _permit: permit,
        }
    }

    /// The next reads return `bytes` (at most 24) before anything from the socket.
    pub(super) fn replay(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(self.replay.len());
        self.replay[..len].copy_from_slice(&bytes[..len]);
        self.replay_from = 0;
        self.replay_to = len;
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replay_from < this.replay_to {
            // Already recorded when they were first read.
            let len = (this.replay_to - this.replay_from).min(buf.remaining());
            buf.put_slice(&this.replay[this.replay_from..this.replay_from + len]);
            this.replay_from += len;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.received();
        }
        polled
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.sent();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.sent();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.closing = Some(Lingering { discarded: 0, deadline: None });
        }
        let Some(lingering) = this.closing.as_mut() else { return Poll::Ready(Ok(())) };
        let mut scratch = [0u8; 4096];
        loop {
            let mut discard = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut discard) {
                // The client closed too (or the socket broke): nothing left to reset an answer.
                Poll::Ready(Ok(())) if discard.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    lingering.discarded += discard.filled().len();
                    if lingering.discarded >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                    lingering.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER_TIME)));
                }
                Poll::Pending => {
                    return match lingering.deadline.as_mut() {
                        // Nothing was unread: closing sends no reset.
                        None => Poll::Ready(Ok(())),
                        Some(deadline) => deadline.as_mut().poll(cx).map(Ok),
                    };
                }
            }
        }
    }
}

/// A service whose requests are counted in flight until their response bodies end.
#[derive(Debug, Clone)]
pub(super) struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S, Request, B> hyper::service::Service<Request> for Counted<S>
where
    S: hyper::service::Service<Request, Response = hyper::Response<B>>,
    S::Future: Unpin,
{
    type Response = hyper::Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn call(&self, request: Request) -> Self::Future {
        let in_flight = self.activity.request_started();
        CountedFuture { inner: self.inner.call(request), in_flight: Some(in_flight) }
    }
}

/// The service's answer, still in flight; its body carries the count on.
#[derive(Debug)]
pub(super) struct CountedFuture<F> {
    inner: F,
    in_flight: Option<InFlight>,
}

impl<F, B, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<hyper::Response<B>, E>> + Unpin,
{
    type Output = Result<hyper::Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = std::task::ready!(Pin::new(&mut this.inner).poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, _in_flight: in_flight })))
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
#[derive(Debug)]
pub(super) struct CountedBody<B> {
    inner: B,
    _in_flight: Option<InFlight>,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
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
    use super::*;

    const TIMEOUTS: Timeouts =
        Timeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(60) };

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_runs_out_after_the_idle_timeout_exactly() {
        let activity = Activity::new();
        let born = Instant::now();
        assert_eq!(activity.check(born, TIMEOUTS), Check::WaitUntil(born + TIMEOUTS.idle));
        let just_before = born + TIMEOUTS.idle - Duration::from_millis(1);
        assert_eq!(activity.check(just_before, TIMEOUTS), Check::WaitUntil(born + TIMEOUTS.idle));
        assert_eq!(activity.check(born + TIMEOUTS.idle, TIMEOUTS), Check::Expired(Timeout::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_head_starts_the_header_clock_and_later_bytes_do_not_restart_it() {
        let activity = Activity::new();
        let first = Instant::now();
        activity.received();
        tokio::time::advance(Duration::from_secs(3)).await;
        activity.received();
        let head_at = first + TIMEOUTS.header_read;
        assert_eq!(activity.check(Instant::now(), TIMEOUTS), Check::WaitUntil(head_at));
        assert_eq!(activity.check(head_at, TIMEOUTS), Check::Expired(Timeout::HeaderRead));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_runs_out_while_a_request_is_in_flight_and_its_end_restarts_the_idle_clock() {
        let activity = Arc::new(Activity::new());
        activity.received();
        let in_flight = activity.request_started();
        tokio::time::advance(TIMEOUTS.idle * 3).await;
        let now = Instant::now();
        assert_eq!(activity.check(now, TIMEOUTS), Check::WaitUntil(now + TIMEOUTS.idle));
        // Bytes of the request's body (or of a pipelined request) start no header clock.
        activity.received();
        drop(in_flight);
        let ended = Instant::now();
        assert_eq!(activity.check(ended, TIMEOUTS), Check::WaitUntil(ended + TIMEOUTS.idle));
        assert_eq!(activity.check(ended + TIMEOUTS.idle, TIMEOUTS), Check::Expired(Timeout::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_after_an_answer_starts_the_header_clock_again() {
        let activity = Arc::new(Activity::new());
        activity.received();
        drop(activity.request_started());
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.received();
        let head_at = Instant::now() + TIMEOUTS.header_read;
        assert_eq!(activity.check(Instant::now(), TIMEOUTS), Check::WaitUntil(head_at));
        tokio::time::timeout(Duration::ZERO, activity.head_started())
            .await
            .expect("the supervisor is woken when a head starts");
    }

    #[tokio::test(start_paused = true)]
    async fn replayed_bytes_come_first_and_whole_even_into_small_buffers() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let limit = super::super::limit::ConnectionLimit::new(1);
        let mut io = WatchedIo::new(server, Arc::new(Activity::new()), limit.try_acquire().unwrap());
        io.replay(b"GET / HT");
        let mut client = client;
        client.write_all(b"TP/1.1\r\n").await.unwrap();
        let mut read = Vec::new();
        let mut small = [0u8; 3];
        while read.len() < 16 {
            let n = io.read(&mut small).await.unwrap();
            read.extend_from_slice(&small[..n]);
        }
        assert_eq!(read, b"GET / HTTP/1.1\r\n");
    }

    fn watched(server: tokio::io::DuplexStream) -> WatchedIo<tokio::io::DuplexStream> {
        let limit = super::super::limit::ConnectionLimit::new(1);
        WatchedIo::new(server, Arc::new(Activity::new()), limit.try_acquire().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_with_nothing_unread_completes_at_once() {
        use tokio::io::AsyncWriteExt;
        let (_client, server) = tokio::io::duplex(64);
        let mut io = watched(server);
        tokio::time::timeout(Duration::ZERO, io.shutdown()).await.expect("no lingering").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_reads_what_the_client_still_sends_until_it_closes_or_the_linger_time_ends() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; 10_000]).await.unwrap();
        let mut io = watched(server);
        let shutdown = tokio::spawn(async move { io.shutdown().await });
        tokio::time::sleep(LINGER_TIME / 2).await;
        assert!(!shutdown.is_finished(), "still reading what the client sends");
        client.write_all(&[b'a'; 10_000]).await.unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_millis(1), shutdown)
            .await
            .expect("done once the client closed")
            .unwrap()
            .unwrap();

        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(b"more").await.unwrap();
        let mut io = watched(server);
        let started = Instant::now();
        io.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), LINGER_TIME, "a client that never closes is given up on");
    }
}
