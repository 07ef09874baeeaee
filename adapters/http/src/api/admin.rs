//! The Admin API: list sessions, revoke one, revoke all of a key or a user. Enabled only when an admin
//! token is configured.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use sidekey_application::ports::{Account, WindowTotals};
use sidekey_application::{AdminError, RevocationTarget, SessionFilter};
use sidekey_domain::{SecretRef, SessionId, Subject};

use super::auth::AdminAccess;
use super::json_body::JsonBody;
use super::session::SessionView;
use crate::problem::{ApiError, ApiFailure, ErrorCode};
use crate::{ApiTags, HttpState};

/// Sessions listed when no `limit` is given.
const DEFAULT_LIST_LIMIT: u32 = 100;
/// Most sessions one listing returns: bounds the response size and the store's work per call.
const MAX_LIST_LIMIT: u32 = 1000;

/// Sessions selected by an admin listing.
#[derive(Debug, Object)]
#[oai(rename = "SessionList")]
pub struct SessionList {
    /// Active sessions, in no particular order.
    pub sessions: Vec<SessionView>,
}

/// What to revoke: every session of one `secret_key_id` (a key rotation) or of one subject (a user ban).
/// Exactly one of the two fields; an explicit `null` is refused.
// The document's `oneOf` is added in `crate::document`; nulls are refused so that "exactly one" has one
// meaning for the server and the schema.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(rename = "RevocationRequest")]
pub struct RevocationRequest {
    /// Revoke every session bound to this `secret_key_id`.
    #[serde(default, deserialize_with = "present")]
    #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._:-]+$"))]
    pub secret_key_id: Option<String>,
    /// Revoke every session of this subject: 1–256 visible ASCII characters.
    #[serde(default, deserialize_with = "present")]
    #[oai(validator(min_length = 1, max_length = 256, pattern = r"^[!-~]+$"))]
    pub subject: Option<String>,
}

/// A field that may be left out but, when given, is a string (never `null`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// How many sessions a bulk revocation ended.
#[derive(Debug, Object)]
#[oai(rename = "RevocationResult")]
pub struct RevocationResult {
    /// Sessions revoked on every instance.
    pub revoked: u64,
}

/// Totals over one UTC window.
#[derive(Debug, Object)]
#[oai(rename = "WindowUsage")]
pub struct WindowUsage {
    /// Proxied requests admitted.
    pub requests: u64,
    /// Input tokens the upstreams reported.
    pub input_tokens: u64,
    /// Output tokens the upstreams reported.
    pub output_tokens: u64,
}

/// A subject's or a key's usage in the current UTC day and month (counted for limited sessions).
#[derive(Debug, Object)]
#[oai(rename = "AccountUsage")]
pub struct AccountUsageView {
    /// The current UTC day.
    pub day: WindowUsage,
    /// The current UTC calendar month.
    pub month: WindowUsage,
}

impl From<WindowTotals> for WindowUsage {
    fn from(totals: WindowTotals) -> Self {
        Self {
            requests: totals.requests,
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
        }
    }
}

#[derive(ApiResponse)]
enum UsageResponse {
    /// The totals.
    #[oai(status = 200)]
    Ok(Json<AccountUsageView>),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The matching sessions.
    #[oai(status = 200)]
    Ok(Json<SessionList>),
}

#[derive(ApiResponse)]
enum DeleteResponse {
    /// The session is revoked.
    #[oai(status = 204)]
    Revoked,
}

#[derive(ApiResponse)]
enum RevocationResponse {
    /// The matching sessions are revoked.
    #[oai(status = 200)]
    Ok(Json<RevocationResult>),
}

/// The Admin API.
pub struct AdminApi;

#[OpenApi(tag = "ApiTags::Admin")]
impl AdminApi {
    /// List sessions
    ///
    /// Active sessions, optionally only those of one `secret_key_id` and/or one subject.
    #[oai(path = "/v1/admin/sessions", method = "get", operation_id = "admin_list_sessions")]
    async fn list(
        &self,
        state: Data<&Arc<HttpState>>,
        _admin: AdminAccess,
        /// Only sessions bound to this `secret_key_id`.
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._:-]+$"))]
        secret_key_id: Query<Option<String>>,
        /// Only sessions of this subject: 1–256 visible ASCII characters.
        #[oai(validator(min_length = 1, max_length = 256, pattern = r"^[!-~]+$"))]
        subject: Query<Option<String>>,
        /// At most this many sessions (default 100, at most 1000).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
    ) -> Result<ListResponse, ApiFailure> {
        let filter = SessionFilter {
            secret_ref: secret_key_id.0.as_deref().map(parse_secret_ref).transpose()?,
            subject: subject.0.as_deref().map(parse_subject).transpose()?,
        };
        let limit = limit.0.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT) as usize;
        let sessions = state.sessions.list(&filter, limit).await.map_err(ApiError::from)?;
        let mut views = Vec::with_capacity(sessions.len());
        for session in &sessions {
            views.push(SessionView::read(&state, session, false).await?);
        }
        let sessions = views;
        Ok(ListResponse::Ok(Json(SessionList { sessions })))
    }

    /// Usage of a subject or a key
    ///
    /// The current UTC day's and month's requests and tokens of every session of one subject or one
    /// `secret_key_id`: exactly one of the two.
    #[oai(path = "/v1/admin/usage", method = "get", operation_id = "admin_usage")]
    async fn usage(
        &self,
        state: Data<&Arc<HttpState>>,
        _admin: AdminAccess,
        /// The subject whose usage to read. Exactly one of `subject` and `secret_key_id` (else 422).
        #[oai(validator(min_length = 1, max_length = 256, pattern = r"^[!-~]+$"))]
        subject: Query<Option<String>>,
        /// The `secret_key_id` whose usage to read. Exactly one of `subject` and `secret_key_id` (else 422).
        #[oai(validator(min_length = 1, max_length = 128, pattern = r"^[A-Za-z0-9._:-]+$"))]
        secret_key_id: Query<Option<String>>,
    ) -> Result<UsageResponse, ApiFailure> {
        let account = match (subject.0.as_deref(), secret_key_id.0.as_deref()) {
            (Some(subject), None) => Account::Subject(parse_subject(subject)?),
            (None, Some(name)) => Account::SecretKey(parse_secret_ref(name)?),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::ValidationFailed,
                    "give exactly one of subject and secret_key_id",
                )
                .into());
            }
        };
        let usage = state.metering.account_usage(&account).await.map_err(ApiError::from)?;
        Ok(UsageResponse::Ok(Json(AccountUsageView { day: usage.day.into(), month: usage.month.into() })))
    }

    /// Revoke one session
    #[oai(path = "/v1/admin/sessions/:session_id", method = "delete", operation_id = "admin_revoke_session")]
    async fn revoke(
        &self,
        state: Data<&Arc<HttpState>>,
        _admin: AdminAccess,
        /// The session's id (a UUID).
        session_id: Path<String>,
    ) -> Result<DeleteResponse, ApiFailure> {
        // Text that is not a UUID names no session: that is a 404, not a malformed request.
        let id = SessionId::parse(&session_id.0).map_err(|_| ApiError::from(AdminError::NotFound))?;
        state.sessions.revoke_by_id(id).await.map_err(ApiError::from)?;
        Ok(DeleteResponse::Revoked)
    }

    /// Revoke every session of a key or a user
    ///
    /// What a key rotation or a user ban calls: every matching session is refused on every instance.
    #[oai(path = "/v1/admin/revocations", method = "post", operation_id = "admin_revoke_matching")]
    async fn revoke_matching(
        &self,
        state: Data<&Arc<HttpState>>,
        _admin: AdminAccess,
        body: JsonBody<RevocationRequest>,
    ) -> Result<RevocationResponse, ApiFailure> {
        let JsonBody(body) = body;
        let target = match (body.secret_key_id.as_deref(), body.subject.as_deref()) {
            (Some(name), None) => RevocationTarget::SecretRef(parse_secret_ref(name)?),
            (None, Some(subject)) => RevocationTarget::Subject(parse_subject(subject)?),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::ValidationFailed,
                    "give exactly one of secret_key_id and subject",
                )
                .into());
            }
        };
        let revoked = state.sessions.revoke_matching(&target).await.map_err(ApiError::from)?;
        Ok(RevocationResponse::Ok(Json(RevocationResult { revoked })))
    }
}

fn parse_secret_ref(text: &str) -> Result<SecretRef, ApiError> {
    SecretRef::parse(text).map_err(|error| ApiError::invalid("secret_key_id", error))
}

fn parse_subject(text: &str) -> Result<Subject, ApiError> {
    Subject::parse(text).map_err(|error| ApiError::invalid("subject", error))
}
