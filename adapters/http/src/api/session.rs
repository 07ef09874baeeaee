//! The Session API: issue, show, refresh, revoke, and forward-auth verification.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use sidekey_application::Grant;
use sidekey_application::{AuthenticatedCaller, CallerAuthenticator, CallerCredential, IssueRequest};
use sidekey_domain::{Metadata, ProxyPath, SecretRef, Session, TokenUsage};
use time::OffsetDateTime;
use uuid::Uuid;

use super::auth::{PresentedToken, VerifiedSession};
use super::json_body::JsonBody;
use super::terms::{LimitsObject, RemainingObject, ScopeObject, UsageObject};
use crate::forward_auth::{VerifiedHeaders, checks_the_forwarded_route, forwarded_request};
use crate::problem::ErrorCode;
use crate::problem::{ApiError, ApiFailure, TokenFailure};
use crate::{ApiTags, HttpState};

/// Asks for a session token standing in for the real key named `secret_key_id`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(rename = "IssueSessionRequest")]
pub struct IssueSessionRequest {
    /// The name of the real key (never the key itself): 1–128 characters of `A-Z a-z 0-9 . _ : -`.
    #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._:-]+$"))]
    pub secret_key_id: String,
    /// Lifetime in seconds; the configured default (`session.default_ttl_seconds`, 3600 unless
    /// configured) when absent or null. Must lie within the configured bounds
    /// (`session.min_ttl_seconds`..=`session.max_ttl_seconds`, 1..=86400 unless configured), else 422
    /// `validation_failed`: the bounds are configuration, so the schema can only say "at least 1".
    #[oai(nullable, validator(minimum(value = "1")))]
    pub ttl_seconds: Option<u64>,
    /// Free-form labels: at most 16 entries; keys of 1–256 characters not starting with `sidekey.`,
    /// values of at most 256 characters; at most `session.max_metadata_bytes` (2048 unless configured)
    /// UTF-8 bytes over all keys and values, else 422 `validation_failed`.
    #[oai(nullable, validator(max_properties = 16))]
    pub metadata: Option<BTreeMap<String, String>>,
    /// What the session may reach, within what the configuration allows.
    #[oai(nullable)]
    pub scope: Option<ScopeObject>,
    /// What the session may consume: left out, the configured defaults; never above the ceilings.
    #[oai(nullable)]
    pub limits: Option<LimitsObject>,
}

/// A new session and its token. The token is shown only here, once.
#[derive(Debug, Object)]
#[oai(rename = "IssuedSession")]
pub struct IssuedSession {
    /// The session's public identifier.
    pub session_id: Uuid,
    /// The session token: send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// When the session stops verifying (RFC 3339, UTC).
    pub expires_at: OffsetDateTime,
    /// Seconds until `expires_at`.
    pub expires_in: u64,
    /// The name of the real key the token stands for.
    pub secret_key_id: String,
    /// The authenticated user the session belongs to, or null.
    #[oai(nullable)]
    pub subject: Option<String>,
    /// What the session may reach.
    pub scope: ScopeObject,
    /// What the session may consume.
    pub limits: LimitsObject,
    /// What it has used (nothing yet).
    pub usage: UsageObject,
}

/// A session as clients and admins see it: never the token, never the real key.
#[derive(Debug, Object)]
#[oai(rename = "Session")]
pub struct SessionView {
    /// The session's public identifier.
    pub session_id: Uuid,
    /// The name of the real key the token stands for.
    pub secret_key_id: String,
    /// The authenticated user the session belongs to, or null.
    #[oai(nullable)]
    pub subject: Option<String>,
    /// When the session was issued (RFC 3339, UTC).
    pub issued_at: OffsetDateTime,
    /// When the session stops verifying (RFC 3339, UTC).
    pub expires_at: OffsetDateTime,
    /// Seconds until `expires_at`.
    pub expires_in: u64,
    /// The labels given at issue.
    pub metadata: BTreeMap<String, String>,
    /// What the session may reach.
    pub scope: ScopeObject,
    /// What the session may consume.
    pub limits: LimitsObject,
    /// What it has used.
    pub usage: UsageObject,
    /// What it may still use under its own limits (in `GET /v1/session` and the refresh answer only;
    /// left out of the admin list).
    #[oai(skip_serializing_if_is_none)]
    pub remaining: Option<RemainingObject>,
}

impl SessionView {
    /// The view of `session` at `now`, with its usage read from the ledger (and what remains, when
    /// `with_remaining`).
    ///
    /// # Errors
    /// 503 `store_unavailable` when the usage cannot be read.
    pub(crate) async fn read(
        state: &HttpState,
        session: &Session,
        with_remaining: bool,
    ) -> Result<Self, ApiError> {
        let usage = state.metering.session_usage(session).await?;
        Ok(Self {
            session_id: session.id().as_uuid(),
            secret_key_id: session.secret_ref().to_string(),
            subject: session.subject().map(ToString::to_string),
            issued_at: session.issued_at().into(),
            expires_at: session.expires_at().into(),
            expires_in: whole_seconds_left(session, state.sessions.now()),
            metadata: session.metadata().entries().clone(),
            scope: ScopeObject::of(session.scope()),
            limits: LimitsObject::of(session.limits()),
            usage: UsageObject::of(&usage),
            remaining: with_remaining.then(|| RemainingObject::of(session.limits(), &usage)),
        })
    }
}

/// Seconds left, rounded up: a session with half a second left still has "1", and a fresh one-hour
/// session says 3600 rather than 3599.
/// Rounded up, so that a session issued for `ttl_seconds` reports exactly that although some
/// microseconds have passed since `issued_at`; a client must count from `expires_at` (or renew a
/// second early, as the JavaScript client does) rather than trust the last fraction of a second.
fn whole_seconds_left(session: &Session, now: SystemTime) -> u64 {
    let left = session.remaining_at(now);
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

#[derive(ApiResponse)]
enum IssueResponse {
    /// The session was created; the token is in the body, and must not be cached.
    #[oai(status = 201)]
    Created(Json<IssuedSession>, #[oai(header = "Cache-Control")] String),
}

/// A one-time ticket for a browser's `EventSource` or `WebSocket`.
#[derive(Debug, Object)]
#[oai(rename = "IssuedTicket")]
pub struct IssuedTicket {
    /// The ticket: pass it once, within `expires_in` seconds, as `?sidekey_ticket=` on a proxied GET or
    /// WebSocket upgrade.
    pub ticket: String,
    /// Seconds the ticket stays valid (30).
    pub expires_in: u64,
}

#[derive(ApiResponse)]
enum TicketResponse {
    /// The ticket; it must not be cached.
    #[oai(status = 201)]
    Created(Json<IssuedTicket>, #[oai(header = "Cache-Control")] String),
}

#[derive(ApiResponse)]
enum SessionResponse {
    /// The session.
    #[oai(status = 200)]
    Ok(Json<SessionView>),
}

#[derive(ApiResponse)]
enum RevokeResponse {
    /// The session is revoked: its token is refused everywhere from now on.
    #[oai(status = 204)]
    Revoked,
}

#[derive(ApiResponse)]
enum VerifyResponse {
    /// The token is valid; the headers say what it grants (for nginx `auth_request`, Traefik ForwardAuth,
    /// Envoy ext_authz).
    #[oai(status = 200)]
    Valid(
        #[oai(header = "X-Sidekey-Session-Id")] String,
        #[oai(header = "X-Sidekey-Secret-Key-Id")] String,
        #[oai(header = "X-Sidekey-Subject")] Option<String>,
        /// The upstreams a scoped session may call, comma-separated.
        #[oai(header = "X-Sidekey-Scope-Upstreams")]
        Option<String>,
        /// The models a scoped session may ask for, comma-separated.
        #[oai(header = "X-Sidekey-Scope-Models")]
        Option<String>,
        /// Requests the session may still make, when it has `max_requests` and the request was counted.
        #[oai(header = "X-Sidekey-Requests-Remaining")]
        Option<u64>,
    ),
}

/// The Session API.
pub struct SessionApi;

#[OpenApi(tag = "ApiTags::Sessions")]
impl SessionApi {
    /// Issue a session token
    ///
    /// Exchanges the name of a real key for a short-lived session token. The real key is fetched from the
    /// secret source now, kept server-side, and never returned.
    #[oai(path = "/v1/sessions", method = "post", operation_id = "issue_session")]
    async fn issue(
        &self,
        state: Data<&Arc<HttpState>>,
        request: &poem::Request,
        body: JsonBody<IssueSessionRequest>,
    ) -> Result<IssueResponse, ApiFailure> {
        let JsonBody(body) = body;
        if let (Some(limiter), Some(client)) = (&state.issue_rate, client_address(request)) {
            limiter.check(client).map_err(|wait| {
                ApiError::new(
                    ErrorCode::RateLimited,
                    "too many sessions created from this address; retry later",
                )
                .retry_after(crate::problem::whole_seconds(wait))
            })?;
        }
        let caller = match &state.callers {
            None => None,
            Some(callers) => Some(authenticate_caller(callers, request).await?),
        };
        let secret_ref = SecretRef::parse(&body.secret_key_id)
            .map_err(|error| ApiError::invalid("secret_key_id", error))?;
        let metadata = Metadata::new(body.metadata.unwrap_or_default())
            .map_err(|error| ApiError::invalid("metadata", error))?;
        let (subject, caller_session) = match caller {
            Some(caller) => (Some(caller.subject), caller.bound_to.map(|session| session.id)),
            None => (None, None),
        };
        let scope = body.scope.as_ref().map(ScopeObject::to_scope).transpose()?.unwrap_or_default();
        let limits = body.limits.as_ref().map(LimitsObject::to_limits).transpose()?.unwrap_or_default();
        let request = IssueRequest {
            secret_ref,
            ttl_seconds: body.ttl_seconds,
            metadata,
            subject,
            caller_session,
            scope,
            limits,
        };
        let issued = state.sessions.issue(request).await.map_err(ApiError::from)?;
        let session = &issued.session;
        let body = IssuedSession {
            session_id: session.id().as_uuid(),
            token: issued.token.expose().to_owned(),
            token_type: "Bearer".to_owned(),
            expires_at: OffsetDateTime::from(session.expires_at()),
            expires_in: whole_seconds_left(session, state.sessions.now()),
            secret_key_id: session.secret_ref().to_string(),
            subject: session.subject().map(ToString::to_string),
            scope: ScopeObject::of(session.scope()),
            limits: LimitsObject::of(session.limits()),
            usage: UsageObject::default(),
        };
        Ok(IssueResponse::Created(Json(body), "no-store".to_owned()))
    }

    /// Show the current session
    ///
    /// The session of the presented token: never the token, never the real key.
    #[oai(path = "/v1/session", method = "get", operation_id = "get_session")]
    async fn show(
        &self,
        state: Data<&Arc<HttpState>>,
        auth: VerifiedSession,
    ) -> Result<SessionResponse, TokenFailure> {
        let VerifiedSession(grant) = auth;
        Ok(SessionResponse::Ok(Json(SessionView::read(&state, &grant.session, true).await?)))
    }

    /// Refresh the current session
    ///
    /// Slides `expires_at` to now + the session's TTL, never past the configured maximum lifetime
    /// counted from `issued_at`.
    #[oai(path = "/v1/session/refresh", method = "post", operation_id = "refresh_session")]
    async fn refresh(
        &self,
        state: Data<&Arc<HttpState>>,
        auth: PresentedToken,
    ) -> Result<SessionResponse, TokenFailure> {
        let session = state.sessions.refresh(&auth.0.token).await.map_err(ApiError::from)?;
        Ok(SessionResponse::Ok(Json(SessionView::read(&state, &session, true).await?)))
    }

    /// Issue a one-time ticket
    ///
    /// For a browser's `EventSource` or `WebSocket`, which cannot send `Authorization`: the ticket
    /// authenticates one proxied GET or WebSocket upgrade as this session, as `?sidekey_ticket=…`,
    /// once, within 30 seconds, on any instance. Reused or late, it is `invalid_token`.
    #[oai(path = "/v1/session/tickets", method = "post", operation_id = "issue_ticket")]
    async fn ticket(
        &self,
        state: Data<&Arc<HttpState>>,
        auth: PresentedToken,
    ) -> Result<TicketResponse, TokenFailure> {
        let ticket = state.sessions.issue_ticket(&auth.0.token).await.map_err(ApiError::from)?;
        let body = IssuedTicket {
            ticket: ticket.expose().to_owned(),
            expires_in: sidekey_domain::TICKET_LIFETIME.as_secs(),
        };
        Ok(TicketResponse::Created(Json(body), "no-store".to_owned()))
    }

    /// Revoke the current session
    ///
    /// Afterwards the token is `invalid_token` everywhere.
    #[oai(path = "/v1/session", method = "delete", operation_id = "revoke_session")]
    async fn revoke(
        &self,
        state: Data<&Arc<HttpState>>,
        auth: PresentedToken,
    ) -> Result<RevokeResponse, TokenFailure> {
        state.sessions.revoke(&auth.0.token).await.map_err(ApiError::from)?;
        Ok(RevokeResponse::Revoked)
    }

    /// Verify a token (forward-auth)
    ///
    /// For nginx `auth_request`, Traefik ForwardAuth and Envoy ext_authz: 200 with the session's headers,
    /// or 401. No body. Any of GET, POST, PUT, PATCH and DELETE is answered alike, since Envoy's HTTP
    /// ext_authz asks with the method of the request it checks; a body is never read. (Its operation
    /// ids, one per method, are given in the document's refinement: poem-openapi allows one per handler.)
    #[oai(
        path = "/v1/auth/verify",
        method = "get",
        method = "post",
        method = "put",
        method = "patch",
        method = "delete"
    )]
    async fn verify(
        &self,
        state: Data<&Arc<HttpState>>,
        request: &poem::Request,
        auth: VerifiedSession,
    ) -> Result<VerifyResponse, ApiFailure> {
        let grant = &auth.0;
        let remaining = if checks_the_forwarded_route(grant, &state.metering, request.headers()) {
            check_forwarded(&state, grant, request.headers()).await?
        } else {
            None
        };
        // Every field by name: a header added to `VerifiedHeaders` must be added here too.
        let VerifiedHeaders { session_id, secret_key_id, subject, scope_upstreams, scope_models } =
            VerifiedHeaders::of(grant);
        Ok(VerifyResponse::Valid(
            session_id,
            secret_key_id,
            subject,
            scope_upstreams,
            scope_models,
            remaining,
        ))
    }
}

/// Forward-auth for a request the reverse proxy names (`X-Forwarded-Method`, `X-Forwarded-Uri`): its route
/// must lie within the session's scope, and a limited session's request is counted, as the proxy would.
/// Returns what remains of `max_requests`.
async fn check_forwarded(
    state: &HttpState,
    grant: &Grant,
    headers: &poem::http::HeaderMap,
) -> Result<Option<u64>, ApiError> {
    let Some((method, uri)) = forwarded_request(headers) else { return Ok(None) };
    let path = uri.split(['?', '#']).next().unwrap_or_default();
    let path =
        ProxyPath::parse(path).map_err(|error| ApiError::new(ErrorCode::InvalidPath, error.to_string()))?;
    if !grant.session.scope().admits_route(method, &path) {
        return Err(ApiError::new(
            ErrorCode::RouteNotAllowed,
            format!("{method} {} is outside the session's scope", path.as_str()),
        ));
    }
    let admitted = state.metering.admit(&grant.session, 0).await?;
    if let Some((reservation, _)) = &admitted {
        // Nothing is metered behind a reverse proxy: the (empty) reservation is settled at once.
        state.metering.settle(reservation, TokenUsage::default()).await;
    }
    Ok(admitted.and_then(|(_, remaining)| remaining.requests))
}

/// The cookie in which Better Auth keeps its session token (`token.signature`).
const BETTER_AUTH_COOKIE: &str = "better-auth.session_token";
/// The same cookie under the `__Secure-` prefix Better Auth uses over HTTPS.
const BETTER_AUTH_SECURE_COOKIE: &str = "__Secure-better-auth.session_token";

/// Checks who is calling `POST /v1/sessions`: a bearer credential (a JWT, or a Better Auth session
/// token), else Better Auth's session cookie.
async fn authenticate_caller(
    callers: &CallerAuthenticator,
    request: &poem::Request,
) -> Result<AuthenticatedCaller, ApiError> {
    let credential = caller_credential(request);
    // The address the failure limits count, so the audit names the client behind a trusted proxy.
    Ok(callers.authenticate(credential.as_ref(), client_address(request)).await?)
}

/// The client's address: the TCP peer, or what a trusted reverse proxy says it is (`http.trusted_proxies`).
fn client_address(request: &poem::Request) -> Option<std::net::IpAddr> {
    let peer = request.remote_addr().as_socket_addr().map(std::net::SocketAddr::ip);
    request
        .data::<crate::HttpSettings>()
        .map_or(peer, |settings| settings.proxy_trust.client_address(request.headers(), peer))
}

fn caller_credential(request: &poem::Request) -> Option<CallerCredential> {
    let headers = request.headers();
    if let Some(value) = headers.get(poem::http::header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or_default();
        // A malformed Authorization header is still a credential, to be refused, not a reason to fall
        // back to the cookie.
        let token = text
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        return Some(CallerCredential::Bearer(token.to_owned()));
    }
    headers
        .get_all(poem::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BETTER_AUTH_COOKIE || *name == BETTER_AUTH_SECURE_COOKIE)
        .map(|(_, value)| CallerCredential::SessionCookie(value.to_owned()))
}
