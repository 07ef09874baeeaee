//! The bearer extractors: one for session tokens, one for the admin token.
//!
//! A route that needs a valid session declares a [`VerifiedSession`] argument and receives the session
//! and the real key; nothing else in the route handles tokens. Routes outside the OpenAPI document (the
//! proxy, later) call [`authenticate`], the same check.

use std::sync::Arc;

use poem::Request;
use poem::web::headers::{Authorization, HeaderMapExt, authorization::Bearer as BearerHeader};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use sha2::{Digest, Sha256};
use sidekey_application::Grant;
use subtle::ConstantTimeEq;

use crate::HttpState;
use crate::problem::{ApiError, ErrorCode};

/// A session token presented as `Authorization: Bearer`, not verified yet: for the routes whose use case
/// verifies it itself (refresh, revoke), so the store is asked once.
#[derive(SecurityScheme)]
#[oai(rename = "sessionToken", ty = "bearer", bearer_format = "skt_<43 base62><6 base62 checksum>")]
pub struct PresentedToken(pub Bearer);

/// A verified session token: the session and the real key it grants.
#[derive(SecurityScheme)]
#[oai(
    rename = "sessionToken",
    ty = "bearer",
    bearer_format = "skt_<43 base62><6 base62 checksum>",
    checker = "verify_presented"
)]
pub struct VerifiedSession(pub Grant);

async fn verify_presented(request: &Request, bearer: Bearer) -> poem::Result<Grant> {
    if let Some(prior) = request.extensions().get::<PriorVerification>()
        && prior.token == bearer.token
    {
        return prior.outcome.clone().map_err(Into::into);
    }
    Ok(verify_token(state_of(request)?, &bearer.token).await?)
}

/// The forward-auth fast path's verification of the request's token ([`crate::server`]), handed on with
/// the request when the route must answer it (a refusal, or a check the fast path leaves to the route),
/// so the store is not asked a second time (which, with the store down, would also double the wait for
/// the 503).
///
/// No `Debug`: it holds the presented token.
#[derive(Clone)]
pub(crate) struct PriorVerification {
    /// The token that was verified, as presented.
    pub(crate) token: String,
    /// What it granted, or the answer to its refusal.
    pub(crate) outcome: Result<Grant, ApiError>,
}

/// Verifies the bearer token of a request that is not an OpenAPI operation (same errors as
/// [`VerifiedSession`], `missing_token` included).
///
/// # Errors
/// The [`ApiError`] to answer with.
pub async fn authenticate(request: &Request) -> Result<Grant, ApiError> {
    let state = state_of(request)?;
    let header = request.headers().typed_get::<Authorization<BearerHeader>>().ok_or_else(|| {
        ApiError::new(ErrorCode::MissingToken, "send the session token as `Authorization: Bearer <token>`")
    })?;
    verify_token(state, header.token()).await
}

async fn verify_token(state: &HttpState, token: &str) -> Result<Grant, ApiError> {
    Ok(state.sessions.verify(token).await?)
}

/// The admin API's credential, kept as a SHA-256 digest so comparisons take constant time whatever the
/// presented token's length.
#[derive(Clone)]
pub struct AdminCredential([u8; 32]);

impl AdminCredential {
    /// The credential for a configured admin token.
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&presented).into()
    }
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCredential(<redacted>)")
    }
}

/// The admin token, checked.
#[derive(SecurityScheme)]
#[oai(rename = "adminToken", ty = "bearer", checker = "check_admin")]
pub struct AdminAccess(pub ());

async fn check_admin(request: &Request, bearer: Bearer) -> poem::Result<()> {
    let state = state_of(request)?;
    let Some(credential) = &state.admin else {
        return Err(ApiError::new(ErrorCode::NotFound, "the admin API is disabled").into());
    };
    if credential.matches(&bearer.token) {
        return Ok(());
    }
    // A valid session token is an authenticated caller without admin rights; anything else is no one.
    if state.sessions.verify(&bearer.token).await.is_ok() {
        return Err(ApiError::new(ErrorCode::Forbidden, "a session token cannot use the admin API").into());
    }
    Err(ApiError::new(ErrorCode::InvalidToken, "the admin token is not valid").into())
}

fn state_of(request: &Request) -> Result<&Arc<HttpState>, ApiError> {
    request
        .data::<Arc<HttpState>>()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the HTTP state is not installed"))
}
