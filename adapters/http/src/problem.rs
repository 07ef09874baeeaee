//! RFC 9457 problem+json errors with the contract's stable codes.
//!
//! Every error the service answers goes through [`ApiError`]: handlers return it, the JSON body extractor
//! and the bearer extractors return it, and [`problem_from_poem_error`] turns the errors poem and
//! poem-openapi raise themselves (a missing bearer header, an unknown route) into it too.
//!
//! Every application error becomes an [`ApiError`] here, by a `From` conversion, and only here: the one
//! place that decides which code and status each failure gets, and what the client is told. A failure's
//! cause (a dependency's own error text) is logged here, once, and never sent.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};
use sidekey_application::ports::{LedgerError, LimitScope, Refusal};
use sidekey_application::{
    AdminError, AdmitError, CallerAuthError, CallerRejection, IssueError, VerifyError,
};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The realm named in every `WWW-Authenticate` challenge.
const REALM: &str = "sidekey";

/// Seconds a client should wait before retrying when a dependency is down: long enough not to hammer a
/// recovering store, short enough that a brief outage does not stall users.
const RETRY_AFTER_UNAVAILABLE_SECONDS: u64 = 1;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// A URI naming the problem type: `urn:sidekey:problem:<code>`.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// A short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, naming the offending field when there is one.
    pub detail: String,
    /// The stable, machine-readable error code (see the contract's Errors table).
    pub code: String,
    /// On the proxy routes only: the same again where the OpenAI and Anthropic SDKs look for it, so
    /// that they surface sidekey's code and reason.
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<SdkError>,
}

/// The `error` member that LLM SDKs read from an error body.
#[derive(Debug, Clone, Object)]
#[oai(rename = "SdkError")]
pub struct SdkError {
    /// The problem's `detail`.
    pub message: String,
    /// The problem's `code`.
    #[oai(rename = "type")]
    pub error_type: String,
    /// The problem's `code`.
    pub code: String,
}

/// The contract's error codes, each with its status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: malformed JSON, wrong content type, unreadable body.
    InvalidRequest,
    /// 401: no bearer credential.
    MissingToken,
    /// 401: malformed, unknown, expired or revoked token.
    InvalidToken,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: unknown route, session or upstream.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 413: request body over the limit.
    PayloadTooLarge,
    /// 422: well-formed JSON with invalid fields.
    ValidationFailed,
    /// 422: the secret source has no such secret.
    UnknownSecretKeyId,
    /// 502: the secret source failed.
    SecretSourceError,
    /// 503: the session store is down.
    StoreUnavailable,
    /// 429: the client sent too many failed requests; with `Retry-After`.
    RateLimited,
    /// 401: the caller's credential (JWT or sign-in session token) was refused.
    InvalidCaller,
    /// 404: the caller's email names no user in the directory.
    UserNotFound,
    /// 404: the caller has no unexpired sign-in session in the directory.
    NoActiveSession,
    /// 503: the user directory is down.
    DirectoryUnavailable,
    /// 503: the identity provider's key set cannot be fetched.
    IdentityProviderUnavailable,
    /// 503: the secret source cannot be asked now (its bus is down, or too many requests wait on it).
    SecretSourceUnavailable,
    /// 503: a dependency needed for readiness is down.
    NotReady,
    /// 504: the secret source did not answer in time.
    SecretSourceTimeout,
    /// 502: a proxied upstream refused, reset or closed the connection, or could not be reached.
    UpstreamError,
    /// 504: a proxied upstream did not connect or answer with its headers in time.
    UpstreamTimeout,
    /// 400: a proxied path with an encoded slash or backslash, a dot segment, or an empty segment.
    InvalidPath,
    /// 403: a proxied route outside the session's or the upstream's routes.
    RouteNotAllowed,
    /// 403: a proxied request's model outside the session's or the upstream's models.
    ModelNotAllowed,
    /// 403: a proxied browser call from an origin outside the session's origins.
    OriginNotAllowed,
    /// 429: a request, token or session budget is used up.
    QuotaExceeded,
    /// 500: a fault of sidekey's own (never bad input).
    Internal,
}

impl ErrorCode {
    /// The stable code string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ValidationFailed => "validation_failed",
            Self::UnknownSecretKeyId => "unknown_secret_key_id",
            Self::SecretSourceError => "secret_source_error",
            Self::StoreUnavailable => "store_unavailable",
            Self::RateLimited => "rate_limited",
            Self::InvalidCaller => "invalid_caller",
            Self::UserNotFound => "user_not_found",
            Self::NoActiveSession => "no_active_session",
            Self::DirectoryUnavailable => "directory_unavailable",
            Self::IdentityProviderUnavailable => "identity_provider_unavailable",
            Self::SecretSourceUnavailable => "secret_source_unavailable",
            Self::NotReady => "not_ready",
            Self::SecretSourceTimeout => "secret_source_timeout",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::InvalidPath => "invalid_path",
            Self::RouteNotAllowed => "route_not_allowed",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Internal => "internal_error",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest | Self::InvalidPath => StatusCode::BAD_REQUEST,
            Self::RouteNotAllowed | Self::ModelNotAllowed | Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::MissingToken | Self::InvalidToken | Self::InvalidCaller => StatusCode::UNAUTHORIZED,
            Self::UserNotFound | Self::NoActiveSession => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::ValidationFailed | Self::UnknownSecretKeyId => StatusCode::UNPROCESSABLE_ENTITY,
            Self::SecretSourceError | Self::UpstreamError => StatusCode::BAD_GATEWAY,
            Self::StoreUnavailable
            | Self::SecretSourceUnavailable
            | Self::DirectoryUnavailable
            | Self::IdentityProviderUnavailable
            | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::SecretSourceTimeout | Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::InvalidRequest => "The request could not be read",
            Self::MissingToken => "A bearer token is required",
            Self::InvalidToken => "The bearer token is not valid",
            Self::Forbidden => "Not allowed",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::PayloadTooLarge => "The request body is too large",
            Self::ValidationFailed => "A field is invalid",
            Self::UnknownSecretKeyId => "Unknown secret_key_id",
            Self::SecretSourceError => "The secret source failed",
            Self::StoreUnavailable => "The session store is unavailable",
            Self::RateLimited => "Too many requests",
            Self::InvalidCaller => "The caller's credential was refused",
            Self::UserNotFound => "No such user",
            Self::NoActiveSession => "The user has no active session",
            Self::DirectoryUnavailable => "The user directory is unavailable",
            Self::IdentityProviderUnavailable => "The identity provider is unavailable",
            Self::SecretSourceUnavailable => "The secret source is unavailable",
            Self::NotReady => "Not ready",
            Self::SecretSourceTimeout => "The secret source did not answer in time",
            Self::UpstreamError => "The upstream failed",
            Self::UpstreamTimeout => "The upstream did not answer in time",
            Self::InvalidPath => "The proxied path is ambiguous",
            Self::RouteNotAllowed => "The route is outside the session's scope",
            Self::ModelNotAllowed => "The model is outside the session's scope",
            Self::OriginNotAllowed => "The origin is outside the session's scope",
            Self::QuotaExceeded => "A budget is used up",
            Self::Internal => "Internal error",
        }
    }
}

/// An error answer: a code, a detail for this request, and the headers its status calls for.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    retry_after_seconds: Option<u64>,
    /// Whether the body carries the SDKs' `error` member too (proxy routes).
    for_sdks: bool,
}

impl ApiError {
    /// An error with a detail written for the client. The detail must never hold a secret.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), retry_after_seconds: None, for_sdks: false }
    }

    /// `validation_failed` for a field that breaks a rule: the detail names the field, then the rule.
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::ValidationFailed, format!("{field}: {rule}"))
    }

    /// The same error, telling the client to wait `seconds` before retrying.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// The same error, its body also carrying the `error` member LLM SDKs read (proxy routes).
    #[must_use]
    pub fn for_sdks(mut self) -> Self {
        self.for_sdks = true;
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The problem document of this error.
    pub fn to_problem(&self) -> Problem {
        Problem {
            problem_type: format!("urn:sidekey:problem:{}", self.code.as_str()),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_owned(),
            error: self.for_sdks.then(|| SdkError {
                message: self.detail.clone(),
                error_type: self.code.as_str().to_owned(),
                code: self.code.as_str().to_owned(),
            }),
        }
    }

    /// The RFC 6750 challenge for a 401, and `None` for other statuses.
    fn challenge(&self) -> Option<String> {
        match self.code {
            ErrorCode::MissingToken => Some(format!("Bearer realm=\"{REALM}\"")),
            ErrorCode::InvalidToken | ErrorCode::InvalidCaller => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                // A quoted-string may not hold a bare quote or backslash (RFC 9110 §5.6.4).
                self.detail.replace(['"', '\\'], "'")
            )),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = Json(self.to_problem()).into_response();
        response.set_status(status);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(challenge) = self.challenge().and_then(|text| HeaderValue::from_str(&text).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        let retry_after = self
            .retry_after_seconds
            .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_UNAVAILABLE_SECONDS));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sidekey_application::TicketError> for ApiError {
    fn from(error: sidekey_application::TicketError) -> Self {
        use sidekey_application::TicketError;
        match error {
            TicketError::Verify(error) => error.into(),
            TicketError::Invalid => Self::new(ErrorCode::InvalidToken, error.to_string()),
            TicketError::StoreUnavailable(cause) => {
                tracing::warn!(%cause, "ticket store failed");
                Self::new(
                    ErrorCode::StoreUnavailable,
                    format!("the ticket store is unavailable; {RETRY_SHORTLY}"),
                )
            }
            // A wiring fault (`bin` always installs a ticket store), not the client's.
            TicketError::Disabled => {
                tracing::error!("no ticket store is installed");
                Self::new(ErrorCode::Internal, "tickets are not available")
            }
            TicketError::Entropy(cause) => {
                tracing::error!(%cause, "no randomness for a ticket");
                Self::new(ErrorCode::Internal, "no ticket could be made")
            }
        }
    }
}

/// What the client is told when a dependency is down: only that it may retry.
const RETRY_SHORTLY: &str = "retry shortly";

impl From<VerifyError> for ApiError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Rejected(rejection) => Self::new(ErrorCode::InvalidToken, rejection.to_string()),
            VerifyError::StoreUnavailable(cause) => {
                tracing::warn!(%cause, "session store failed");
                Self::new(
                    ErrorCode::StoreUnavailable,
                    format!("the session store is unavailable; {RETRY_SHORTLY}"),
                )
            }
            VerifyError::DirectoryUnavailable(cause) => {
                tracing::warn!(%cause, "user directory failed");
                Self::new(
                    ErrorCode::DirectoryUnavailable,
                    format!("the user directory is unavailable; {RETRY_SHORTLY}"),
                )
            }
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(error: IssueError) -> Self {
        match error {
            IssueError::InvalidTtl(error) => Self::new(ErrorCode::ValidationFailed, error.to_string()),
            IssueError::UnknownSecret { looked_in } => {
                let detail = match looked_in {
                    Some(place) => {
                        tracing::info!(looked_in = %place, "the secret source has no secret of that name");
                        format!("the secret source has no secret of that name (looked for {place})")
                    }
                    None => "the secret source has no secret of that name".to_owned(),
                };
                Self::new(ErrorCode::UnknownSecretKeyId, detail)
            }
            IssueError::SecretSourceTimeout => {
                Self::new(ErrorCode::SecretSourceTimeout, "the secret source did not answer in time")
            }
            IssueError::SecretSourceFailed(cause) => {
                tracing::warn!(%cause, "secret source failed");
                Self::new(ErrorCode::SecretSourceError, "the secret source failed")
            }
            IssueError::SecretSourceUnavailable(cause) => {
                tracing::warn!(%cause, "secret source unavailable");
                Self::new(
                    ErrorCode::SecretSourceUnavailable,
                    format!("the secret source is unavailable; {RETRY_SHORTLY}"),
                )
            }
            IssueError::StoreUnavailable(cause) => {
                tracing::warn!(%cause, "session store failed on issue");
                Self::new(
                    ErrorCode::StoreUnavailable,
                    format!("the session store is unavailable; {RETRY_SHORTLY}"),
                )
            }
            IssueError::Entropy(error) => {
                tracing::error!(%error, "no randomness for a token");
                Self::new(ErrorCode::Internal, "an unexpected error occurred; it has been logged")
            }
            IssueError::InvalidScope(error) => Self::new(ErrorCode::ValidationFailed, error.to_string()),
            IssueError::InvalidLimits(error) => Self::new(ErrorCode::ValidationFailed, error.to_string()),
            IssueError::MetadataTooLarge { .. } => Self::new(ErrorCode::ValidationFailed, error.to_string()),
            IssueError::TooManySessions { .. } => Self::new(
                ErrorCode::QuotaExceeded,
                format!("{error}: end one (DELETE /v1/session) or wait for one to expire"),
            ),
        }
    }
}

/// The ledger is kept in the session store's backend: down, it is the store that is unavailable.
impl From<LedgerError> for ApiError {
    fn from(LedgerError::Unavailable(cause): LedgerError) -> Self {
        tracing::warn!(%cause, "usage ledger failed");
        Self::new(ErrorCode::StoreUnavailable, format!("the session store is unavailable; {RETRY_SHORTLY}"))
    }
}

impl From<AdmitError> for ApiError {
    fn from(error: AdmitError) -> Self {
        match error {
            AdmitError::Refused(Refusal::RateLimited { scope, retry_after }) => {
                let whose = match scope {
                    LimitScope::Subject => "this user's",
                    _ => "this session's",
                };
                Self::new(
                    ErrorCode::RateLimited,
                    format!("too many requests: {whose} rate per minute is used up"),
                )
                .retry_after(whole_seconds(retry_after))
            }
            AdmitError::Refused(Refusal::QuotaExceeded { scope, retry_after }) => {
                let what = match scope {
                    LimitScope::Session => "the session's request or token budget is used up",
                    LimitScope::Subject => "this user's token budget for the period is used up",
                    LimitScope::SecretKey => "the daily token budget of this key is used up",
                };
                let error = Self::new(ErrorCode::QuotaExceeded, what);
                match retry_after {
                    Some(wait) => error.retry_after(whole_seconds(wait)),
                    None => error,
                }
            }
            AdmitError::LedgerUnavailable(cause) => LedgerError::Unavailable(cause).into(),
        }
    }
}

/// Whole seconds, rounded up (a `Retry-After` rounded down would invite a retry that is refused again),
/// and at least one.
pub fn whole_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::NotFound => Self::new(ErrorCode::NotFound, "no active session has that id"),
            AdminError::StoreUnavailable(cause) => {
                tracing::warn!(%cause, "session store failed on an admin operation");
                Self::new(
                    ErrorCode::StoreUnavailable,
                    format!("the session store is unavailable; {RETRY_SHORTLY}"),
                )
            }
        }
    }
}

/// The caller authenticator audits every refusal with its reason and cause; here the client learns
/// only what it can act on.
impl From<CallerAuthError> for ApiError {
    fn from(error: CallerAuthError) -> Self {
        match error {
            CallerAuthError::Rejected(CallerRejection::Missing) => Self::new(
                ErrorCode::MissingToken,
                "creating a session needs the caller's credential: Authorization: Bearer <JWT or session token>",
            ),
            CallerAuthError::Rejected(rejection) => {
                Self::new(ErrorCode::InvalidCaller, rejection.to_string())
            }
            CallerAuthError::UserNotFound => {
                Self::new(ErrorCode::UserNotFound, "no user has the caller's email")
            }
            CallerAuthError::NoActiveSession => {
                Self::new(ErrorCode::NoActiveSession, "the caller has no active sign-in session")
            }
            CallerAuthError::DirectoryUnavailable(_) => Self::new(
                ErrorCode::DirectoryUnavailable,
                format!("the user directory is unavailable; {RETRY_SHORTLY}"),
            ),
            CallerAuthError::ProviderUnavailable(_) => Self::new(
                ErrorCode::IdentityProviderUnavailable,
                format!("the identity provider's keys cannot be fetched; {RETRY_SHORTLY}"),
            ),
        }
    }
}

impl From<ApiError> for poem::Error {
    fn from(error: ApiError) -> Self {
        poem::Error::from_response(error.into_response())
    }
}

/// Turns an error that poem or poem-openapi raised on its own into the contract's problem+json.
///
/// Errors already built as responses (ours) pass through unchanged.
pub fn problem_from_poem_error(error: poem::Error) -> Response {
    if error.is_from_response() {
        return error.into_response();
    }
    let api_error = if error.is::<poem_openapi::error::AuthorizationError>() {
        ApiError::new(ErrorCode::MissingToken, "send the session token as `Authorization: Bearer <token>`")
    } else if error.is::<poem_openapi::error::ContentTypeError>() {
        ApiError::new(ErrorCode::InvalidRequest, "the body must be JSON (`Content-Type: application/json`)")
    } else if let Some(param) = error.downcast_ref::<poem_openapi::error::ParseParamError>() {
        ApiError::new(ErrorCode::ValidationFailed, format!("parameter `{}` is invalid", param.name))
    } else {
        match error.status() {
            StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ApiError::new(ErrorCode::MethodNotAllowed, "the route does not accept this method")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            }
            status if status.is_client_error() => {
                ApiError::new(ErrorCode::InvalidRequest, "the request could not be read")
            }
            status => {
                tracing::error!(%status, error = %error, "unexpected error");
                ApiError::new(ErrorCode::Internal, "an unexpected error occurred; it has been logged")
            }
        }
    };
    api_error.into_response()
}

/// The errors of the routes that take a session token: documented for the OpenAPI document; built from
/// an [`ApiError`].
#[derive(ApiResponse)]
pub enum TokenFailure {
    /// `missing_token` or `invalid_token`, with an RFC 6750 challenge.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// `rate_limited` (too many failed requests, or issuances, from this client address) or
    /// `quota_exceeded` (a limit or budget used up); retry after the given seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// `store_unavailable`: fail closed; retry after the given seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// `internal_error`.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

impl From<ApiError> for TokenFailure {
    fn from(error: ApiError) -> Self {
        let challenge = error.challenge();
        let problem = Json(error.to_problem());
        match error.code.status() {
            StatusCode::UNAUTHORIZED => Self::Unauthorized(problem, challenge.unwrap_or_default()),
            StatusCode::TOO_MANY_REQUESTS => {
                Self::TooManyRequests(problem, error.retry_after_seconds.unwrap_or(1))
            }
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable(problem, RETRY_AFTER_UNAVAILABLE_SECONDS),
            _ => Self::Internal(problem),
        }
    }
}

/// The errors of the routes that take a JSON body or admin credentials.
#[derive(ApiResponse)]
pub enum ApiFailure {
    /// `invalid_request`: malformed JSON, wrong content type, unreadable body.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// `missing_token` or `invalid_token`, with an RFC 6750 challenge.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// `forbidden`.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// `not_found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// `payload_too_large`.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Problem>),
    /// `validation_failed` (the detail names the field) or `unknown_secret_key_id`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// `rate_limited` (too many failed requests, or issuances, from this client address) or
    /// `quota_exceeded` (a limit or budget used up); retry after the given seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// `secret_source_error`.
    #[oai(status = 502, content_type = "application/problem+json")]
    BadGateway(Json<Problem>),
    /// `store_unavailable` or `secret_source_unavailable`: fail closed; retry after the given seconds.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// `secret_source_timeout`.
    #[oai(status = 504, content_type = "application/problem+json")]
    GatewayTimeout(Json<Problem>),
    /// `internal_error`.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

impl From<ApiError> for ApiFailure {
    fn from(error: ApiError) -> Self {
        let challenge = error.challenge();
        let problem = Json(error.to_problem());
        match error.code.status() {
            StatusCode::BAD_REQUEST => Self::BadRequest(problem),
            StatusCode::UNAUTHORIZED => Self::Unauthorized(problem, challenge.unwrap_or_default()),
            StatusCode::FORBIDDEN => Self::Forbidden(problem),
            StatusCode::NOT_FOUND => Self::NotFound(problem),
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(problem),
            StatusCode::UNPROCESSABLE_ENTITY => Self::Unprocessable(problem),
            StatusCode::TOO_MANY_REQUESTS => {
                Self::TooManyRequests(problem, error.retry_after_seconds.unwrap_or(1))
            }
            StatusCode::BAD_GATEWAY => Self::BadGateway(problem),
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable(problem, RETRY_AFTER_UNAVAILABLE_SECONDS),
            StatusCode::GATEWAY_TIMEOUT => Self::GatewayTimeout(problem),
            _ => Self::Internal(problem),
        }
    }
}
