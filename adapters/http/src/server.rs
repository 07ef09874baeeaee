//! The HTTP server: the connections, bounded, with a valid forward-auth check answered before poem.
//!
//! `GET /v1/auth/verify` sits on every request of every user, and poem's server, router and
//! middleware cost several times what verifying a token does (`docs/BENCHMARKS.md`, "Where verify's
//! time goes"). So this server, not poem's, owns the connections, and `ForwardAuth` answers the one
//! case that matters for speed, a valid token, directly: with the same headers, the same latency
//! metric and the same `Cache-Control` as the route. Everything else, an invalid token included, goes
//! to the poem application unchanged, so every error, problem+json body, CORS header and rate-limit
//! decision still has one implementation. A token the fast path refused travels with the request
//! (`PriorVerification`), so the route answers it without asking the store again.
//!
//! Connections are HTTP/1.1 or HTTP/2 (prior knowledge), told apart by their first bytes. Hostile
//! clients are bounded (`[http]`, [`ServerSettings`]): a request head must arrive within the header
//! timeout once it has begun, and stay under the size limit (431); a connection with nothing in flight
//! and nothing moving is closed after the idle timeout; past the connection cap, new connections are
//! closed at once while the accepted ones keep being served. On shutdown the listener closes, idle
//! connections close, in-flight requests finish, and whatever is still running after the grace period
//! is cut.
//!
//! # Layout
//! - this file: the accept loop, the application and its forward-auth fast path.
//! - `connection`: one connection: protocol, hyper, and the supervisor that closes it.
//! - `activity`: what a connection is doing (bytes, requests in flight, a head arriving).
//! - `limit`: the connection cap.
//!
//! Why not hyper's own pieces (hyper 1.12, hyper-util 0.1.21): hyper's `header_read_timeout` also runs
//! while a keep-alive connection waits for its next request, so it would close idle connections at the
//! header timeout rather than the idle one, and it does not exist for HTTP/2; hyper-util's `auto`
//! builder does not pass hyper's exact `max_header_size` on, only `max_buf_size` (a floor of 8 KiB, and
//! checked only while a head is incomplete, so a larger head that arrives in one read passes); its
//! `GracefulShutdown` has no idle close. Telling the protocols apart takes a few lines, so the server
//! uses hyper's two builders.

mod activity;
mod connection;
mod limit;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, Method, header};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Response};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::auth::PriorVerification;
use crate::forward_auth::{VerifiedHeaders, checks_the_forwarded_route, finish, latency_histogram};
use crate::rate_limit::FailureLimiter;
use crate::{HttpState, Surface};

pub use activity::Timeouts;
use connection::{Ending, Protocols};
use limit::ConnectionLimit;

/// The body type hyper sends: poem's, so its answers and the fast path's share one connection type.
type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// The forward-auth route the fast path answers.
pub const VERIFY_PATH: &str = "/v1/auth/verify";

/// The methods forward-auth answers alike: nginx and Traefik ask with GET, Envoy's HTTP ext_authz with
/// the method of the request it checks. Kept equal to the route's methods (a test compares them).
pub const VERIFY_METHODS: [Method; 5] =
    [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// The listen backlog: connections the kernel completes and holds until the server accepts them. A
/// burst past it (a thousand clients reconnecting at once, a flood at the connection cap) has its
/// handshakes dropped or answered with SYN cookies, and clients retry only after a second or more. The
/// 128 that `TcpListener::bind` asks for (as std does) overflowed when 500 clients connected at once on a
/// loaded machine; Linux caps the value at `net.core.somaxconn` (4096 by default since 5.4).
const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` for [`serve`], with room for bursts of new connections (`LISTEN_BACKLOG`).
///
/// # Errors
/// When the address cannot be bound.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restarted server binds again at once, past the old TIME_WAITs.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How long to wait before accepting again after an error that is not one connection's (out of file
/// descriptors, say): retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The HTTP application: poem's endpoint for every route, and the fast path in front of it.
pub struct HttpApp {
    endpoint: BoxEndpoint<'static, Response>,
    /// `None` on a listener that does not serve forward-auth (the admin listener).
    forward_auth: Option<ForwardAuth>,
    /// The live proxied WebSockets: closed (1001) on shutdown, and waited for within the grace period.
    relays: crate::proxy::websocket::Relays,
}

impl HttpApp {
    pub(super) fn new(
        endpoint: BoxEndpoint<'static, Response>,
        state: Arc<HttpState>,
        limiter: Option<Arc<FailureLimiter>>,
        surface: Surface,
    ) -> Self {
        let relays = state.relays.clone();
        let forward_auth =
            surface.serves(VERIFY_PATH).then(|| ForwardAuth { state, limiter, latency: OnceLock::new() });
        Self { endpoint, forward_auth, relays }
    }

    /// Answers one request from `peer` that arrived on `local`.
    async fn answer(
        &self,
        request: poem::http::Request<Incoming>,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Response {
        let request = match &self.forward_auth {
            Some(forward_auth) => match forward_auth.answer(request, peer).await {
                Ok(response) => return response,
                Err(request) => request,
            },
            None => request,
        };
        let request = poem::Request::from((
            request,
            LocalAddr(local.into()),
            RemoteAddr(peer.into()),
            poem::http::uri::Scheme::HTTP,
        ));
        self.endpoint.get_response(request).await
    }
}

/// How the server treats connections ([`crate::HttpConfig::server_settings`] reads them from `[http]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// The header and idle timeouts.
    pub timeouts: Timeouts,
    /// Largest request head (request line and headers; on HTTP/2 the header list), in bytes.
    pub max_header_bytes: u32,
    /// Most connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// On shutdown, how long in-flight requests may take to finish before they are cut.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `stop` completes; then stops accepting, lets in-flight requests
/// finish for up to the grace period, and cuts the rest.
///
/// # Errors
/// When the listener has no local address.
pub async fn serve(
    listener: TcpListener,
    app: HttpApp,
    settings: ServerSettings,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let app = Arc::new(app);
    let protocols = Arc::new(Protocols::new(settings.timeouts, settings.max_header_bytes));
    let limit = ConnectionLimit::new(settings.max_connections);
    let (shutdown, shutdown_signal) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(ended) = connections.join_next() => {
                if let Err(error) = ended && error.is_panic() {
                    tracing::error!(%error, "a connection's task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Past the cap: closed at once (and counted), the served ones unaffected.
                    let Some(permit) = limit.try_acquire() else { continue };
                    // Answers are small and complete: send each at once rather than after Nagle's wait.
                    let _ = stream.set_nodelay(true);
                    let service = ConnectionService { app: app.clone(), local, peer };
                    let connection = connection::serve(
                        stream,
                        service,
                        protocols.clone(),
                        shutdown_signal.clone(),
                        permit,
                    );
                    connections.spawn(async move {
                        match connection.await {
                            Ok(Ending::Closed) => {}
                            Ok(Ending::Cut) => tracing::debug!(%peer, "connection cut"),
                            Err(error) => tracing::debug!(%error, %peer, "connection ended with an error"),
                        }
                    });
                }
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot accept connections; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
    drop(listener);
    shutdown.send_replace(true);
    app.relays.shut_down();
    let grace = settings.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
        app.relays.closed().await;
    });
    if drained.await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            grace_seconds = grace.as_secs_f64(),
            "requests still running after the grace period; cutting them"
        );
    }
    connections.shutdown().await;
    Ok(())
}

/// Errors that end one connection before it was accepted, not the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    )
}

/// One connection's service: every request goes to the shared application.
#[derive(Clone)]
struct ConnectionService {
    app: Arc<HttpApp>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl hyper::service::Service<poem::http::Request<Incoming>> for ConnectionService {
    type Response = poem::http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: poem::http::Request<Incoming>) -> Self::Future {
        let Self { app, local, peer } = self.clone();
        Box::pin(async move { Ok(app.answer(request, local, peer).await.into()) })
    }
}

/// `GET /v1/auth/verify` with a valid token, answered without poem.
///
/// It takes a request only when the route would answer it exactly so: the method and path match, no
/// `Origin` (CORS answers go through [`crate::cors`]), the client is not blocked by the rate limiter,
/// and `Authorization` is one `Bearer` credential. A refused token is handed on with the request, and so
/// is a valid one whose forwarded route must be checked or counted (the route does that).
struct ForwardAuth {
    state: Arc<HttpState>,
    limiter: Option<Arc<FailureLimiter>>,
    /// The route's latency histogram, looked up once: finding it by its labels costs more than the
    /// verification.
    latency: OnceLock<metrics::Histogram>,
}

impl ForwardAuth {
    /// The answer, or the request back (marked with the refusal when the token was refused).
    async fn answer<B>(
        &self,
        mut request: poem::http::Request<B>,
        peer: SocketAddr,
    ) -> Result<Response, poem::http::Request<B>> {
        if !VERIFY_METHODS.contains(request.method())
            || request.uri().path() != VERIFY_PATH
            || request.headers().contains_key(header::ORIGIN)
        {
            return Err(request);
        }
        let started = Instant::now();
        if let Some(limiter) = &self.limiter
            && let Some(client) = limiter.client_from(request.headers(), Some(peer.ip()))
            && limiter.blocked_for(client).is_some()
        {
            return Err(request);
        }
        let Some(token) = bearer_token(request.headers()) else { return Err(request) };
        let grant = match self.state.sessions.verify(token).await {
            Ok(grant) => grant,
            Err(error) => {
                let refusal = PriorVerification { token: token.to_owned(), outcome: Err(error.into()) };
                request.extensions_mut().insert(refusal);
                return Err(request);
            }
        };
        if checks_the_forwarded_route(&grant, &self.state.metering, request.headers()) {
            let verified = PriorVerification { token: token.to_owned(), outcome: Ok(grant) };
            request.extensions_mut().insert(verified);
            return Err(request);
        }
        let mut response = Response::default();
        // A subject that cannot be a header value is left to the route, which decides what to do.
        if VerifiedHeaders::of(&grant).write_into(response.headers_mut()).is_none() {
            return Err(request);
        }
        let latency = self.latency.get_or_init(|| latency_histogram("verify_token", "200"));
        finish(response.headers_mut(), true, latency, started);
        Ok(response)
    }
}

/// The token of the request's one `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.strip_prefix("Bearer ")
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::num::NonZeroU32;

    use poem::http::{Request, StatusCode};
    use sidekey_application::ports::MockSessionStore;
    use sidekey_application::{Clock, Grant, Lookup, SessionService};
    use sidekey_domain::{
        Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Subject, Token,
    };
    use sidekey_local::{EnvSecretSource, SystemClock};

    use super::*;
    use crate::problem::{ApiError, ErrorCode};
    use crate::rate_limit::FailureQuota;

    #[test]
    fn the_fast_path_takes_exactly_the_methods_the_route_is_documented_with() {
        let allow = crate::document::allowed_methods().allow(VERIFY_PATH).expect("the route is documented");
        let mut documented: Vec<&str> = allow.split(", ").filter(|method| *method != "HEAD").collect();
        let mut fast: Vec<&str> = VERIFY_METHODS.iter().map(Method::as_str).collect();
        documented.sort_unstable();
        fast.sort_unstable();
        assert_eq!(fast, documented);
    }

    struct Fixture {
        forward_auth: ForwardAuth,
        token: Token,
        session: Session,
    }

    const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 40000);

    /// The fast path over a store holding one session (with a subject), which must be asked exactly
    /// `finds` times (the mock checks it when the fixture is dropped).
    fn fixture(limiter: Option<Arc<FailureLimiter>>, finds: usize) -> Fixture {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let policy = SessionPolicy::default();
        let token = Token::generate().unwrap();
        let digest = token.digest();
        let session = Session::issue(
            SessionId::of_token(&digest),
            SecretRef::parse("openai-prod").unwrap(),
            Some(Subject::parse("user_42").unwrap()),
            Metadata::default(),
            policy.ttl(None).unwrap(),
            clock.now(),
        );
        let secret = Arc::new(SecretValue::new("sk-real-key-never-sent".to_owned()).unwrap());
        let grant = Grant { session: session.clone(), secret };
        let mut store = MockSessionStore::new();
        store.expect_find().times(finds).returning(move |keys| {
            Ok(if *keys.digest() == digest { Lookup::Active(grant.clone()) } else { Lookup::Missing })
        });
        let sessions =
            Arc::new(SessionService::new(Arc::new(store), Arc::new(EnvSecretSource), clock.clone(), policy));
        let state = Arc::new(HttpState::bare(sessions, clock));
        Fixture { forward_auth: ForwardAuth { state, limiter, latency: OnceLock::new() }, token, session }
    }

    fn verify_request(authorization: &str) -> Request<()> {
        Request::get(VERIFY_PATH).header(header::AUTHORIZATION, authorization).body(()).unwrap()
    }

    impl Fixture {
        fn bearer(&self) -> String {
            format!("Bearer {}", self.token.expose())
        }
    }

    #[tokio::test]
    async fn a_valid_token_is_answered_with_the_routes_headers_after_one_lookup() {
        let fixture = fixture(None, 1);
        let Ok(response) = fixture.forward_auth.answer(verify_request(&fixture.bearer()), PEER).await else {
            panic!("a valid token must be answered by the fast path");
        };
        assert_eq!(response.status(), StatusCode::OK);
        let header =
            |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(header("x-sidekey-session-id"), Some(fixture.session.id().to_string()));
        assert_eq!(header("x-sidekey-secret-key-id").as_deref(), Some("openai-prod"));
        assert_eq!(header("x-sidekey-subject").as_deref(), Some("user_42"));
        assert_eq!(header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(response.headers().len(), 4, "nothing else, the real key least of all: {response:?}");
    }

    #[tokio::test]
    async fn a_refused_token_goes_to_the_route_with_its_refusal_so_the_store_is_asked_once() {
        let fixture = fixture(None, 1);
        let unknown = Token::generate().unwrap();
        let presented = format!("Bearer {}", unknown.expose());
        let Err(request) = fixture.forward_auth.answer(verify_request(&presented), PEER).await else {
            panic!("an unknown token must be left to the route");
        };
        let refusal =
            request.extensions().get::<PriorVerification>().expect("the refusal travels with the request");
        assert_eq!(refusal.token, unknown.expose());
        assert_eq!(refusal.outcome.as_ref().err().map(ApiError::code), Some(ErrorCode::InvalidToken));
    }

    #[tokio::test]
    async fn requests_the_fast_path_cannot_answer_exactly_as_the_route_are_passed_on_unverified() {
        // None of them may be verified by the fast path: the store is never asked.
        let fixture = fixture(None, 0);
        let bearer = fixture.bearer();
        let lowercase_scheme = format!("bearer {}", fixture.token.expose());
        let passed_on: Vec<(&str, Request<()>)> = vec![
            (
                "OPTIONS",
                Request::options(VERIFY_PATH).header(header::AUTHORIZATION, &bearer).body(()).unwrap(),
            ),
            ("HEAD", Request::head(VERIFY_PATH).header(header::AUTHORIZATION, &bearer).body(()).unwrap()),
            (
                "another path",
                Request::get("/v1/session").header(header::AUTHORIZATION, &bearer).body(()).unwrap(),
            ),
            (
                "a trailing slash",
                Request::get("/v1/auth/verify/").header(header::AUTHORIZATION, &bearer).body(()).unwrap(),
            ),
            (
                "a CORS request",
                Request::get(VERIFY_PATH)
                    .header(header::AUTHORIZATION, &bearer)
                    .header(header::ORIGIN, "https://chat.example")
                    .body(())
                    .unwrap(),
            ),
            (
                "two credentials",
                Request::get(VERIFY_PATH)
                    .header(header::AUTHORIZATION, &bearer)
                    .header(header::AUTHORIZATION, &bearer)
                    .body(())
                    .unwrap(),
            ),
            ("another scheme spelling", verify_request(&lowercase_scheme)),
            ("no credential", Request::get(VERIFY_PATH).body(()).unwrap()),
        ];
        for (case, request) in passed_on {
            let Err(request) = fixture.forward_auth.answer(request, PEER).await else {
                panic!("{case}: must be left to the route");
            };
            assert!(
                request.extensions().get::<PriorVerification>().is_none(),
                "{case}: nothing was verified"
            );
        }
    }

    #[tokio::test]
    async fn a_client_over_its_quota_is_left_to_the_route_even_with_a_valid_token() {
        let one = NonZeroU32::new(1).unwrap();
        let limiter = Arc::new(FailureLimiter::new(
            FailureQuota { per_second: one, burst: one },
            crate::ProxyTrust::default(),
        ));
        // Asked once: for the client that is not blocked.
        let fixture = fixture(Some(limiter.clone()), 1);
        let client = limiter.client_from(&HeaderMap::new(), Some(PEER.ip())).unwrap();
        while limiter.record_failure(client).is_none() {}

        let blocked = fixture.forward_auth.answer(verify_request(&fixture.bearer()), PEER).await;
        assert!(blocked.is_err(), "the route answers a blocked client (429)");

        let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 40000);
        let other = fixture.forward_auth.answer(verify_request(&fixture.bearer()), elsewhere).await;
        assert!(other.is_ok(), "another client is not blocked");
    }
}
