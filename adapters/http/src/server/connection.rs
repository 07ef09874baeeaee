//! One connection, from its first byte to its close: which protocol it speaks, hyper serving it, and a
//! supervisor that closes it when a clock runs out or the server shuts down.
//!
//! The supervisor and hyper run in the connection's one task: each turn it polls hyper first, then the
//! shutdown signal, then its own timer, which is armed at the earliest instant a clock could run out
//! ([`Activity::check`]) and re-armed only when that turns out to have moved.
//!
//! How a connection ends:
//! - a head too slow on HTTP/1.1 is cut at once (no request is in flight, by definition, and hyper's
//!   graceful close would go on reading the head of a connection's first request);
//! - an idle connection, and on HTTP/2 a head too slow (frames other than requests arriving with
//!   nothing in flight also start that clock), is closed gracefully: at once on HTTP/1.1, with a
//!   GOAWAY on HTTP/2 so the client knows no request of its was dropped;
//! - on shutdown, gracefully: in-flight requests finish, HTTP/1.1 keep-alive ends after them;
//! - a connection asked to close gracefully that still has not, with nothing in flight, after
//!   [`CLOSE_GRACE`] (an HTTP/2 client that never acknowledges the GOAWAY), is cut.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::activity::{Activity, Check, Counted, HTTP2_PREFACE, Timeout, Timeouts, WatchedIo};
use super::limit::ConnectionPermit;

/// How long a connection asked to close gracefully may take, with nothing in flight, before it is cut:
/// an HTTP/2 GOAWAY and the round trip of its ping over a slow mobile link.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The connection counter of closes by a timeout.
const TIMED_OUT_COUNTER: &str = "sidekey_connections_timed_out_total";

/// How every connection is served: hyper's builders for each protocol, and the clocks.
pub(super) struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    timeouts: Timeouts,
}

impl Protocols {
    /// Request heads above `max_header_bytes` are refused: `431` on HTTP/1.1 (hyper's answer, without a
    /// body), and on HTTP/2 the limit is announced as `SETTINGS_MAX_HEADER_LIST_SIZE`, and a larger list
    /// gets `431` and its stream reset.
    pub(super) fn new(timeouts: Timeouts, max_header_bytes: u32) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .max_header_size(usize::try_from(max_header_bytes).unwrap_or(usize::MAX))
            // hyper's own clock also runs while a keep-alive connection waits for its next request (hyper
            // 1.12), so it would close idle connections at the header timeout; the supervisor keeps both.
            .header_read_timeout(None);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.max_header_list_size(max_header_bytes);
        Self { http1, http2, timeouts }
    }
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// How a connection ended, when not by an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// hyper closed it: the client left, or it closed as asked (keep-alive off, GOAWAY).
    Closed,
    /// Cut by the supervisor.
    Cut,
}

/// A connection that failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    /// Reading its first bytes failed.
    #[error("reading the first bytes: {0}")]
    Preface(#[from] std::io::Error),
    /// hyper reported an error.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Serves one connection with `service` until it ends; `shutdown` turning true closes it gracefully.
pub(super) async fn serve<I, S, B>(
    io: I,
    service: S,
    protocols: Arc<Protocols>,
    mut shutdown: watch::Receiver<bool>,
    permit: ConnectionPermit,
) -> Result<Ending, ConnectionError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>> + Send + 'static,
    S::Future: Unpin + Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let mut io = WatchedIo::new(io, activity.clone(), permit);
    let timeouts = protocols.timeouts;
    let protocol = {
        let mut detecting = pin!(detect(&mut io));
        loop {
            let wake_at = match activity.check(Instant::now(), timeouts) {
                Check::Expired(timeout) => {
                    count(timeout);
                    return Ok(Ending::Cut);
                }
                Check::WaitUntil(at) => at,
            };
            tokio::select! {
                biased;
                detected = &mut detecting => match detected? {
                    Some(protocol) => break protocol,
                    None => return Ok(Ending::Closed),
                },
                _ = shutdown.changed() => return Ok(Ending::Closed),
                () = activity.head_started() => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    };
    let service = Counted::new(service, activity.clone());
    // HTTP/1.1 serves WebSocket upgrades (`with_upgrades`). The upgraded socket keeps the permit (it is
    // inside `WatchedIo`), so it still counts under the cap; the supervisor stops watching it when hyper
    // hands it over (the connection future ends), and the proxy's relay bounds it (its idle and maximum
    // durations, and shutdown through `Relays`).
    match protocol {
        Protocol::Http1 => {
            let connection = protocols.http1.serve_connection(TokioIo::new(io), service).with_upgrades();
            supervise(connection, protocol, &activity, timeouts, shutdown).await
        }
        Protocol::Http2 => {
            let connection = protocols.http2.serve_connection(TokioIo::new(io), service);
            supervise(connection, protocol, &activity, timeouts, shutdown).await
        }
    }
}

/// Reads until the first bytes tell the protocol (HTTP/2 when they are its preface), then leaves them
/// to be read again. `None` when the client left first.
async fn detect<I: AsyncRead + Unpin>(io: &mut WatchedIo<I>) -> std::io::Result<Option<Protocol>> {
    let mut seen = [0u8; HTTP2_PREFACE.len()];
    let mut len = 0;
    loop {
        let read = io.read(&mut seen[len..]).await?;
        if read == 0 {
            return Ok(None);
        }
        len += read;
        let protocol = if seen[..len] != HTTP2_PREFACE[..len] {
            Protocol::Http1
        } else if len == HTTP2_PREFACE.len() {
            Protocol::Http2
        } else {
            continue;
        };
        io.replay(&seen[..len]);
        return Ok(Some(protocol));
    }
}

/// A hyper connection the supervisor can ask to close.
trait GracefulConnection: Future<Output = Result<(), hyper::Error>> {
    fn close_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> GracefulConnection for http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> GracefulConnection for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn close_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> GracefulConnection for http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn close_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `connection` to its end, closing it when a clock runs out or `shutdown` turns true.
async fn supervise<C: GracefulConnection>(
    connection: C,
    protocol: Protocol,
    activity: &Activity,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Ending, ConnectionError> {
    let mut connection = pin!(connection);
    let mut closing_since: Option<Instant> = None;
    let mut shutting_down = false;
    loop {
        let now = Instant::now();
        let mut wake_at = match activity.check(now, timeouts) {
            Check::Expired(Timeout::HeaderRead) if protocol == Protocol::Http1 => {
                count(Timeout::HeaderRead);
                return Ok(Ending::Cut);
            }
            Check::Expired(timeout) => {
                if closing_since.is_none() {
                    count(timeout);
                    connection.as_mut().close_gracefully();
                    closing_since = Some(now);
                }
                // Closing already: what bounds it is the grace below.
                now + timeouts.idle
            }
            Check::WaitUntil(at) => at,
        };
        if let Some(since) = closing_since
            && activity.is_quiet()
        {
            let cut_at = since + CLOSE_GRACE;
            if now >= cut_at {
                return Ok(Ending::Cut);
            }
            wake_at = wake_at.min(cut_at);
        }
        tokio::select! {
            biased;
            ended = connection.as_mut() => return Ok(ended.map(|()| Ending::Closed)?),
            // An error means the server is gone: a shutdown as well.
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if closing_since.is_none() {
                    connection.as_mut().close_gracefully();
                    closing_since = Some(Instant::now());
                }
            }
            () = activity.head_started() => {}
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

fn count(timeout: Timeout) {
    metrics::counter!(TIMED_OUT_COUNTER, "timeout" => timeout.label()).increment(1);
}

#[cfg(test)]
mod tests;
