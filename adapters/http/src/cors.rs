//! CORS for browser frontends: the configured origins may call the session and proxy routes.
//!
//! poem's own `Cors` allows every origin when its list is empty, answers a disallowed origin's plain
//! request with an error, and replaces a response's `Vary` header; a proxy needs none of that. The rules
//! here:
//! - Only routes under `/v1/` take part, except the admin API (an operator's token has no business in a
//!   browser).
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is
//!   answered here with 204, before any authentication (a preflight never carries credentials), allowing
//!   the methods a proxy needs and the headers the page asked for (so `Authorization` and an SDK's own
//!   headers pass); from any other origin it is refused with 403 `forbidden` and no CORS header.
//! - Any other request is served as usual; an allowed origin's answer gains `Access-Control-Allow-Origin`
//!   (that origin, never `*`) and `Access-Control-Expose-Headers: *`; others get no CORS header, so the
//!   browser keeps the answer from the page.
//! - Tokens travel in `Authorization`, never in cookies: no `Access-Control-Allow-Credentials`.

use std::sync::Arc;
use std::time::Duration;

use poem::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::HttpState;
use crate::problem::{ApiError, ErrorCode};

/// The methods a preflight is told are allowed: all a proxied API may use.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Allowed request headers when a preflight names none.
const DEFAULT_ALLOWED_HEADERS: &str = "authorization, content-type";

/// Which origins may call from a browser, and how long a browser may cache a preflight's answer.
#[derive(Debug, Clone, Default)]
pub struct CorsSettings {
    /// Serialized origins (`scheme://host[:port]`, lower case), as browsers send them in `Origin`.
    origins: Vec<HeaderValue>,
    max_age_seconds: u64,
}

/// An origin in the configuration is not `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cors.allowed_origins entry {0:?} must be scheme://host[:port], without a path (and not *)")]
pub struct CorsConfigError(pub String);

impl CorsSettings {
    /// 10 minutes: Chromium's cap on `Access-Control-Max-Age` (Firefox allows a day).
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

    /// Settings for these origins; an empty list disables CORS.
    ///
    /// # Errors
    /// [`CorsConfigError`] for an entry that is not an origin.
    pub fn new(origins: &[String], max_age: Duration) -> Result<Self, CorsConfigError> {
        let origins = origins.iter().map(|origin| parse_origin(origin)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { origins, max_age_seconds: max_age.as_secs() })
    }

    /// Whether any origin is allowed.
    pub fn is_enabled(&self) -> bool {
        !self.origins.is_empty()
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.origins.iter().any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }
}

fn parse_origin(text: &str) -> Result<HeaderValue, CorsConfigError> {
    let refuse = || CorsConfigError(text.to_owned());
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let uri: Uri = trimmed.parse().map_err(|_| refuse())?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { return Err(refuse()) };
    let bare = uri.path().is_empty() || uri.path() == "/";
    if !bare || uri.query().is_some() || authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(refuse());
    }
    HeaderValue::from_str(&format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        authority.as_str().to_ascii_lowercase()
    ))
    .map_err(|_| refuse())
}

/// Whether `path` takes part in CORS.
fn covered(path: &str) -> bool {
    path.starts_with("/v1/") && !path.starts_with("/v1/admin")
}

/// The CORS middleware (see the module doc).
pub async fn around<E: Endpoint>(next: Arc<E>, request: Request) -> poem::Result<Response> {
    // The state, not the settings, is cloned: one reference count, whatever the number of origins.
    let state = request.data::<Arc<HttpState>>().filter(|state| state.cors.is_enabled()).cloned();
    let Some(state) = state.filter(|_| covered(request.uri().path())) else {
        return next.call(request).await.map(IntoResponse::into_response);
    };
    let cors = &state.cors;
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().is_some_and(|origin| cors.allows(origin));
    let preflight = request.method() == Method::OPTIONS
        && origin.is_some()
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);

    if preflight {
        let mut response = if allowed {
            preflight_response(cors, origin.as_ref(), request.headers())
        } else {
            ApiError::new(ErrorCode::Forbidden, "this origin may not call sidekey from a browser")
                .into_response()
        };
        response.headers_mut().append(
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        return Ok(response);
    }

    let mut response = next.call(request).await.map(IntoResponse::into_response)?;
    let headers = response.headers_mut();
    // The answer depends on Origin whenever CORS is on, even for a request without one (RFC 9110 §12.5.5).
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin.filter(|_| allowed) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
    }
    Ok(response)
}

fn preflight_response(cors: &CorsSettings, origin: Option<&HeaderValue>, request: &HeaderMap) -> Response {
    // Echo the headers the page asked for when every one is a valid name: the origin is trusted, and an
    // SDK sends headers of its own (`x-stainless-*`, `openai-beta`) besides `Authorization`.
    let asked = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|value| {
            value.to_str().is_ok_and(|text| {
                text.split(',').all(|name| HeaderName::from_bytes(name.trim().as_bytes()).is_ok())
            })
        })
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS));
    let mut response = Response::builder().status(StatusCode::NO_CONTENT).finish();
    let headers = response.headers_mut();
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cors.max_age_seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_paths_refused() {
        let settings = CorsSettings::new(
            &["http://localhost:3000".to_owned(), "HTTPS://App.Example.com/".to_owned()],
            CorsSettings::DEFAULT_MAX_AGE,
        )
        .unwrap();
        assert!(settings.allows(&HeaderValue::from_static("http://localhost:3000")));
        assert!(settings.allows(&HeaderValue::from_static("https://app.example.com")));
        assert!(!settings.allows(&HeaderValue::from_static("http://localhost:3001")));
        assert!(!settings.allows(&HeaderValue::from_static("null")));
        for bad in ["*", "localhost:3000", "https://example.com/app", "https://u:p@example.com", "null", ""] {
            assert!(CorsSettings::new(&[bad.to_owned()], Duration::from_secs(1)).is_err(), "{bad}");
        }
        assert!(!CorsSettings::new(&[], Duration::from_secs(1)).unwrap().is_enabled());
    }

    #[test]
    fn the_admin_api_and_operations_routes_are_not_covered() {
        assert!(covered("/v1/sessions"));
        assert!(covered("/v1/proxy/openai/v1/chat/completions"));
        assert!(covered("/v1/chatkit"));
        assert!(!covered("/v1/admin/sessions"));
        assert!(!covered("/healthz"));
    }
}
