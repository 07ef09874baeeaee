//! sidekey's inbound side: the contract's HTTP API on poem-openapi, the server that owns the
//! connections, and the protected proxy that carries real keys to the upstreams allowed to have them.
//!
//! Depends on `domain` and `application` only: the stores, secret sources and identity checks arrive as
//! the application's services and ports, wired by `bin`. Only this crate knows HTTP statuses, and only
//! [`problem`] maps application errors to the contract's problem+json codes.
//!
//! # Layout
//! - [`config`]: the settings of this side (`[http]`, `[cors]`, `[[upstreams]]`) as configuration spells
//!   them.
//! - [`problem`]: [`ApiError`](problem::ApiError), the contract's codes, the conversion of every
//!   application error and of poem's own errors.
//! - [`api`]: the routes of the OpenAPI document (sessions, admin, operations), the bearer extractors
//!   and the size-limited JSON body.
//! - [`proxy`]: `ANY /v1/proxy/{upstream}/…` and `ANY /v1/chatkit/…` (poem routes rather than OpenAPI
//!   operations: any method, any body; [`document`] describes them in the document) and their
//!   transport: validated upstreams, header rules, streamed bodies, the pooled client.
//! - [`document`]: the OpenAPI document, refined where poem-openapi's derives cannot say what the server
//!   does (closed objects, `oneOf`, each route's real statuses, the proxy routes), and the `Allow` header
//!   of a 405 read back from it.
//! - [`forward_auth`]: the headers of a valid `GET /v1/auth/verify` and the finishing step of every
//!   answer, shared by the route and the server's fast path.
//! - [`middleware`]: one wrapper around every route: errors to problem+json, `Cache-Control`, latency.
//! - [`cors`]: CORS for the configured browser origins on the session and proxy routes.
//! - [`issue_rate`]: the rate of `POST /v1/sessions` per client address.
//! - [`rate_limit`]: clients that send too many failed requests are refused for a while.
//! - [`trusted_proxies`]: whose forwarding headers are believed, and so which address is the client's.
//! - [`server`]: the connections (bounded: header and idle timeouts, head size, connection cap), and a
//!   valid `GET /v1/auth/verify` answered before poem.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod cors;
pub mod document;
pub mod forward_auth;
pub mod issue_rate;
pub mod middleware;
pub mod problem;
pub mod proxy;
pub mod rate_limit;
pub mod server;
pub mod trusted_proxies;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, IntoEndpoint, Route};
use poem_openapi::{OpenApiService, Tags};
use sidekey_application::{CallerAuthenticator, Metering, SessionService};

pub use api::auth::{AdminCredential, VerifiedSession, authenticate};
pub use cors::{CorsConfigError, CorsSettings};
pub use issue_rate::IssueLimiter;
pub use rate_limit::{FailureLimiter, FailureQuota};
pub use server::{HttpApp, ServerSettings, Timeouts, listen, serve};
pub use trusted_proxies::ProxyTrust;

pub use config::{CorsConfig, HttpConfig, HttpConfigError};
pub use proxy::{Proxy, UpstreamSettings};

/// Renders the metrics registry as Prometheus text.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// What the routes share.
pub struct HttpState {
    /// The use cases.
    pub sessions: Arc<SessionService>,
    /// The admin API's credential; `None` disables the admin API (its routes answer 404).
    pub admin: Option<AdminCredential>,
    /// The metrics registry, when one is installed.
    pub metrics: Option<MetricsRenderer>,
    /// The configured upstreams; `None` when there are none (the proxy routes answer 404).
    pub proxy: Option<Proxy>,
    /// The browser origins allowed by CORS (none: no CORS headers at all).
    pub cors: CorsSettings,
    /// Who may create sessions; `None` (`auth.mode = none`) lets any caller that reaches sidekey.
    pub callers: Option<Arc<CallerAuthenticator>>,
    /// Limited sessions' requests admitted and metered.
    pub metering: Arc<Metering>,
    /// `POST /v1/sessions` per client address; `None`: unlimited.
    pub issue_rate: Option<IssueLimiter>,
    /// The live proxied WebSockets, closed on shutdown.
    pub relays: proxy::websocket::Relays,
}

#[cfg(test)]
impl HttpState {
    /// The state the unit tests start from: these sessions, nothing optional configured, and an
    /// in-memory ledger on `clock` with no budgets.
    fn bare(sessions: Arc<SessionService>, clock: Arc<dyn sidekey_application::Clock>) -> Self {
        let ledger = Arc::new(sidekey_local::InMemoryUsageLedger::new(clock.clone()));
        Self {
            sessions,
            admin: None,
            metrics: None,
            proxy: None,
            cors: CorsSettings::default(),
            callers: None,
            metering: Arc::new(Metering::new(ledger, clock, sidekey_application::Budgets::default())),
            issue_rate: None,
            relays: Default::default(),
        }
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Surface {
    /// Every route (no separate admin listener).
    #[default]
    All,
    /// Every route but the admin API and `/metrics` (they are served on the admin listener).
    Public,
    /// Only the admin API, `/metrics` and the health checks (`admin.listen`).
    Admin,
}

impl Surface {
    /// Whether this listener serves `path`.
    pub fn serves(self, path: &str) -> bool {
        let admin = path == "/v1/admin" || path.starts_with("/v1/admin/") || path == "/metrics";
        match self {
            Self::All => true,
            Self::Public => !admin,
            Self::Admin => admin || path == "/healthz" || path == "/readyz",
        }
    }
}

/// Limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest JSON request body, in bytes.
    pub body_limit: usize,
    /// Failed requests allowed per client address; `None` disables the limit.
    pub failure_quota: Option<FailureQuota>,
    /// Whose forwarding headers are believed: for the client address and on the way to the upstreams.
    pub proxy_trust: ProxyTrust,
    /// Whether `/docs` and `/openapi.json` are served.
    pub docs: bool,
    /// Which routes this listener serves.
    pub surface: Surface,
}

impl HttpSettings {
    /// The contract's default JSON body limit: 16 KiB, ample for a session request (a 128-byte name and
    /// 16 metadata entries of 2 × 256 characters fit in 9 KiB even as 4-byte UTF-8).
    pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024;
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit: Self::DEFAULT_BODY_LIMIT,
            failure_quota: None,
            proxy_trust: ProxyTrust::default(),
            docs: true,
            surface: Surface::All,
        }
    }
}

/// Groups of operations in the OpenAPI document.
#[derive(Tags)]
pub enum ApiTags {
    /// Issue, inspect, refresh and revoke session tokens; forward-auth verification.
    Sessions,
    /// Operator access (needs `SIDEKEY_ADMIN_TOKEN`).
    Admin,
    /// Health, readiness and metrics.
    Operations,
}

type Apis = (api::session::SessionApi, api::admin::AdminApi, api::operations::OperationsApi);

fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (api::session::SessionApi, api::admin::AdminApi, api::operations::OperationsApi),
        "sidekey",
        env!("CARGO_PKG_VERSION"),
    )
    .summary("Short-lived session tokens in place of real LLM API keys")
    .description(
        "A chat frontend exchanges the *name* of a real key for a short-lived session token; sidekey \
         keeps the real key server-side and verifies the token on every call. Every error is \
         `application/problem+json` with a stable `code`.",
    )
}

/// The OpenAPI document, exactly as `GET /openapi.json` serves it.
pub fn openapi_json() -> String {
    document::openapi_json(&openapi_service().spec())
}

/// The whole HTTP application: the contract's routes, `/openapi.json`, `/docs`, the shared middleware,
/// and the forward-auth fast path; [`server::serve`] serves it.
pub fn app(state: Arc<HttpState>, settings: HttpSettings) -> HttpApp {
    let limiter = settings
        .failure_quota
        .map(|quota| Arc::new(FailureLimiter::new(quota, settings.proxy_trust.clone())));
    let surface = settings.surface;
    HttpApp::new(endpoint(state.clone(), settings, limiter.clone()).boxed(), state, limiter, surface)
}

fn endpoint(
    state: Arc<HttpState>,
    settings: HttpSettings,
    limiter: Option<Arc<FailureLimiter>>,
) -> impl Endpoint<Output = poem::Response> + 'static {
    let service = openapi_service();
    let mut route = Route::new();
    if settings.docs {
        // Both from the refined document: poem-openapi's own endpoints would serve the unrefined one.
        let raw = service.spec();
        let refined = document::openapi_json(&raw);
        let html = service.swagger_ui_html().replacen(&raw, &refined, 1);
        route = route
            .at(
                "/openapi.json",
                poem::endpoint::make_sync(move |_| {
                    poem::Response::builder().content_type("application/json").body(refined.clone())
                }),
            )
            .at("/docs", poem::endpoint::make_sync(move |_| poem::web::Html(html.clone())));
    }
    route
        .nest("/", service.into_endpoint())
        // Unstripped: the route reads the path below the prefix exactly as the client encoded it.
        .nest_no_strip(proxy::route::PROXY_PREFIX, proxy::route::ProxyRoute::Named)
        .nest_no_strip(proxy::route::CHATKIT_PREFIX, proxy::route::ProxyRoute::ChatKit)
        .around(middleware::around)
        .around(cors::around)
        .data(limiter)
        .data(settings)
        .data(state)
}
