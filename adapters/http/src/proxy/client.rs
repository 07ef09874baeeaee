//! The one pooled HTTP client every upstream request goes through.
//!
//! hyper-util's pooled client keeps connections alive per origin (HTTP/1.1 keep-alive; one multiplexed
//! HTTP/2 connection when TLS negotiates `h2` by ALPN). TLS is rustls with the ring provider, as for Redis,
//! and Mozilla's roots compiled in, so a slim container needs no CA bundle.
//!
//! Each upstream has its own connect timeout; the connector looks it up by the origin it is asked to reach
//! and bounds the TCP connect and the TLS handshake together.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use super::body::RequestBody;
use super::upstream::Upstream;

/// The client type: the timed connector and the limited request body.
pub(crate) type UpstreamClient = Client<TimedConnector, RequestBody>;

/// How long an unused pooled connection is kept: long enough to serve the next message of a chat, short
/// enough to let go of upstreams nobody calls (and below the 120 s after which common load balancers drop
/// idle connections silently).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per origin: bounds the sockets a burst leaves behind.
const POOL_MAX_IDLE_PER_HOST: usize = 64;

/// TCP keep-alive probes on upstream connections, so a dead peer is noticed on a long quiet stream.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connect step timed out.
#[derive(Debug, thiserror::Error)]
#[error("connecting to the upstream took longer than {0:?}")]
pub(crate) struct ConnectTimeout(Duration);

/// `(scheme, host, port)`: what identifies an origin for the connect timeout.
type Origin = (String, String, u16);

fn origin_of(uri: &Uri) -> Option<Origin> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host, port))
}

/// hyper-rustls's connector with the connect timeout of the origin it is reaching.
#[derive(Clone)]
pub(crate) struct TimedConnector {
    inner: HttpsConnector<HttpConnector>,
    /// The configured connect timeout of each upstream origin (the longest, when several upstreams share
    /// an origin: a shorter one would fail requests another upstream's operator expects to wait for).
    timeouts: Arc<HashMap<Origin, Duration>>,
}

impl Service<Uri> for TimedConnector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let limit = origin_of(&uri)
            .and_then(|origin| self.timeouts.get(&origin).copied())
            .unwrap_or(super::UpstreamSettings::DEFAULT_CONNECT_TIMEOUT);
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(ConnectTimeout(limit)) as BoxError),
            }
        })
    }
}

/// Builds the client for these upstreams.
///
/// # Errors
/// When rustls refuses its own default configuration (it does not, with ring).
pub(crate) fn build<'a>(
    upstreams: impl IntoIterator<Item = &'a Upstream>,
) -> Result<UpstreamClient, rustls::Error> {
    let mut timeouts: HashMap<Origin, Duration> = HashMap::new();
    for upstream in upstreams {
        let limit = timeouts.entry(upstream.origin()).or_insert(upstream.connect_timeout);
        *limit = (*limit).max(upstream.connect_timeout);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    // The timed connector bounds connect and handshake together.
    http.set_connect_timeout(None);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let connector = TimedConnector { inner: https, timeouts: Arc::new(timeouts) };
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

/// Why no response came back from an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Connecting, or waiting for the response headers, took longer than configured (504).
    Timeout,
    /// Refused, reset, closed, unresolvable, a TLS failure, a malformed answer (502). The text is for the
    /// log: hyper's errors name no URL and carry no header, so no key.
    Unreachable(String),
}

/// Classifies a client error.
pub(crate) fn classify(error: &hyper_util::client::legacy::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut description = String::new();
    let mut timed_out = false;
    while let Some(cause) = source {
        if cause.is::<ConnectTimeout>()
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            timed_out = true;
        }
        if !description.is_empty() {
            description.push_str(": ");
        }
        description.push_str(&cause.to_string());
        source = cause.source();
    }
    if timed_out { SendError::Timeout } else { SendError::Unreachable(description) }
}
