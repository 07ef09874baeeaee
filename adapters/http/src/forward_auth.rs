//! What a valid `GET /v1/auth/verify` answers, and the step that finishes every API answer.
//!
//! The answer is built in two places: the route in [`crate::api::session`] (documented in the OpenAPI
//! document) and the server's fast path ([`crate::server`]), which answers before poem because this is
//! the most frequent request of all. Both take the headers from [`VerifiedHeaders`], framework-free, and
//! both end with [`finish`] (`Cache-Control`, the latency metric), so a header or a rule added here
//! reaches both paths, and the parity test in `server` guards the rest.

use std::time::Instant;

use poem::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use sidekey_application::{Grant, Metering};

/// `X-Sidekey-Session-Id`: the session that made the request.
pub const SESSION_ID: HeaderName = HeaderName::from_static("x-sidekey-session-id");
/// `X-Sidekey-Secret-Key-Id`: the name of the real key the session stands for.
pub const SECRET_KEY_ID: HeaderName = HeaderName::from_static("x-sidekey-secret-key-id");
/// `X-Sidekey-Subject`: the authenticated user, when the session has one.
pub const SUBJECT: HeaderName = HeaderName::from_static("x-sidekey-subject");
/// `X-Sidekey-Scope-Upstreams`: the upstreams a scoped session may call, comma-separated.
pub const SCOPE_UPSTREAMS: HeaderName = HeaderName::from_static("x-sidekey-scope-upstreams");
/// `X-Sidekey-Scope-Models`: the models a scoped session may ask for, comma-separated.
pub const SCOPE_MODELS: HeaderName = HeaderName::from_static("x-sidekey-scope-models");
/// `X-Forwarded-Method`: the method of the request a reverse proxy asks about.
pub const FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
/// `X-Forwarded-Uri`: the target of the request a reverse proxy asks about.
pub const FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The headers a valid token's answer carries, as text.
///
/// The route destructures it field by field, so a field added here fails to compile until the route
/// (and with it the OpenAPI document) says it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHeaders {
    /// `X-Sidekey-Session-Id`.
    pub session_id: String,
    /// `X-Sidekey-Secret-Key-Id`.
    pub secret_key_id: String,
    /// `X-Sidekey-Subject`, when the session has a subject.
    pub subject: Option<String>,
    /// `X-Sidekey-Scope-Upstreams`, when the session's scope names upstreams.
    pub scope_upstreams: Option<String>,
    /// `X-Sidekey-Scope-Models`, when the session's scope names models.
    pub scope_models: Option<String>,
}

impl VerifiedHeaders {
    /// What `grant` says about its session.
    pub fn of(grant: &Grant) -> Self {
        let session = &grant.session;
        let scope = session.scope();
        let joined = |items: Vec<String>| items.join(",");
        Self {
            session_id: session.id().to_string(),
            secret_key_id: session.secret_ref().to_string(),
            subject: session.subject().map(ToString::to_string),
            scope_upstreams: scope
                .upstreams()
                .map(|set| joined(set.iter().map(ToString::to_string).collect())),
            scope_models: scope.models().map(|list| joined(list.iter().map(ToString::to_string).collect())),
        }
    }

    /// Writes them into `headers`; `None` when one cannot be a header value (the caller then leaves the
    /// request to the route, which decides what to do).
    pub fn write_into(&self, headers: &mut HeaderMap) -> Option<()> {
        headers.insert(SESSION_ID, HeaderValue::from_str(&self.session_id).ok()?);
        headers.insert(SECRET_KEY_ID, HeaderValue::from_str(&self.secret_key_id).ok()?);
        for (name, value) in [
            (SUBJECT, &self.subject),
            (SCOPE_UPSTREAMS, &self.scope_upstreams),
            (SCOPE_MODELS, &self.scope_models),
        ] {
            if let Some(value) = value {
                headers.insert(name, HeaderValue::from_str(value).ok()?);
            }
        }
        Some(())
    }
}

/// The last step of every answer: one under `/v1/` (`under_api`) must never be stored by a browser or
/// a shared cache, since it is about tokens (RFC 9111 §5.2.2.5); and the request's latency is recorded
/// on `latency` (the histogram of its operation and status).
pub fn finish(headers: &mut HeaderMap, under_api: bool, latency: &metrics::Histogram, started: Instant) {
    if under_api {
        headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    latency.record(started.elapsed().as_secs_f64());
}

/// The latency histogram of one operation and status.
pub fn latency_histogram(operation: &'static str, status: &'static str) -> metrics::Histogram {
    metrics::histogram!(
        "sidekey_http_request_duration_seconds",
        "operation" => operation,
        "status" => status,
    )
}

/// The method and target of the request a reverse proxy asks about (`X-Forwarded-Method`,
/// `X-Forwarded-Uri`), when it says.
pub fn forwarded_request(headers: &HeaderMap) -> Option<(&str, &str)> {
    let method = headers.get(FORWARDED_METHOD)?.to_str().ok()?;
    let uri = headers.get(FORWARDED_URI)?.to_str().ok()?;
    Some((method, uri))
}

/// Whether a valid token's verification must check or count the forwarded request: the reverse proxy
/// names it, and the session has route rules or limits. Everything else is answered as it always was.
pub fn checks_the_forwarded_route(grant: &Grant, metering: &Metering, headers: &HeaderMap) -> bool {
    let session = &grant.session;
    forwarded_request(headers).is_some()
        && (session.scope().routes().is_some() || metering.applies_to(session))
}
