//! The one wrapper every request goes through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;

use crate::document::allowed_methods;
use crate::forward_auth::{finish, latency_histogram};
use crate::problem::{ApiError, ErrorCode, problem_from_poem_error};
use crate::rate_limit::FailureLimiter;
use crate::{HttpSettings, HttpState};

/// Turns every error into problem+json, keeps token-bearing answers out of caches, hides the admin API
/// when it is disabled, refuses clients over their quota of failed requests, and records the request's
/// latency by operation and status.
pub async fn around<E: Endpoint>(next: Arc<E>, request: Request) -> poem::Result<Response> {
    let started = Instant::now();
    let path = request.uri().path();
    // Kept for the `Allow` header of a 405, which is known only once the router has answered. A clone
    // of the `Uri` shares the request line's bytes; copying the path would allocate on every request.
    let requested = request.uri().clone();
    let under_api = path.starts_with("/v1/");
    let admin_disabled = path.starts_with("/v1/admin")
        && request.data::<Arc<HttpState>>().is_some_and(|state| state.admin.is_none());
    // A route another listener serves is not found here (the admin API and /metrics on `admin.listen`).
    let elsewhere = request.data::<HttpSettings>().is_some_and(|settings| !settings.surface.serves(path));
    // Health, readiness and metrics stay answerable whatever a client did on the API.
    let limited = request
        .data::<Option<Arc<FailureLimiter>>>()
        .and_then(Option::as_ref)
        .filter(|_| under_api)
        .and_then(|limiter| Some((limiter.clone(), limiter.client_of(&request)?)));

    let blocked =
        limited.as_ref().and_then(|(limiter, client)| Some((limiter, limiter.blocked_for(*client)?)));
    let mut response = if let Some((limiter, wait)) = blocked {
        limiter.hold(wait).await;
        rate_limited(wait)
    } else if admin_disabled {
        ApiError::new(ErrorCode::NotFound, "the admin API is disabled").into_response()
    } else if elsewhere {
        ApiError::new(ErrorCode::NotFound, "no such route").into_response()
    } else {
        match next.call(request).await {
            Ok(response) => response.into_response(),
            Err(error) => {
                let operation = error.data::<OperationId>().copied();
                let mut response = problem_from_poem_error(error);
                if let Some(operation) = operation {
                    response.set_data(operation);
                }
                response
            }
        }
    };

    if let Some((limiter, client)) = &limited
        && blocked.is_none()
        && FailureLimiter::counts_as_failure(response.status())
        && let Some(wait) = limiter.record_failure(*client)
    {
        limiter.hold(wait).await;
        response = rate_limited(wait);
    }

    // RFC 9110 §15.5.6: a 405 lists the methods the resource does serve, as the document lists them.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::ALLOW)
        && let Some(allow) = allowed_methods().allow(requested.path())
        && let Ok(value) = HeaderValue::from_str(allow)
    {
        response.headers_mut().insert(header::ALLOW, value);
    }

    let operation = response.data::<OperationId>().map_or("unrouted", |operation| operation.0);
    let latency = latency_histogram(operation, status_label(response.status()));
    finish(response.headers_mut(), under_api, &latency, started);
    Ok(response)
}

/// The answer to a client over its quota of failed requests.
fn rate_limited(wait: Duration) -> Response {
    // Retry-After counts whole seconds; rounding down would invite a retry that is refused again.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(ErrorCode::RateLimited, "too many failed requests from this address; retry later")
        .retry_after(seconds.max(1))
        .into_response()
}

/// A `'static` label for the statuses the service answers with, so recording a latency allocates nothing.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
