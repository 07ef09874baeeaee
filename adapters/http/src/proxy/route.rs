//! `ANY /v1/proxy/{upstream}/{path…}` and `ANY /v1/chatkit[/{path…}]`: the session token in, the real key
//! out, bodies streamed both ways.
//!
//! The order of the checks is the contract's and never leaks more than the caller may know: the token
//! first (401 before anything about upstreams is revealed), then the upstream (404), then whether the
//! session's `secret_key_id` may go there (403, and the key is not sent), then the request itself (400,
//! 413). Only then is the upstream contacted.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::combinators::BoxBody;
use poem::http::{StatusCode, header};
use poem::web::headers::authorization::Bearer;
use poem::web::headers::{Authorization, HeaderMapExt};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;

use super::{
    BodyOutcome, ClientContext, Outbound, OutboundError, RequestBody, ResponseBody, SendError, Upstream,
};
use crate::HttpState;
use crate::api::auth::authenticate;
use crate::problem::{ApiError, ErrorCode};

/// The path prefix of named upstreams.
pub const PROXY_PREFIX: &str = "/v1/proxy";
/// The path prefix of the upstream named [`CHATKIT_UPSTREAM`].
pub const CHATKIT_PREFIX: &str = "/v1/chatkit";
/// The upstream that `/v1/chatkit` reaches.
pub const CHATKIT_UPSTREAM: &str = "chatkit";

/// The label of these routes in `sidekey_http_request_duration_seconds`.
const OPERATION: OperationId = OperationId("proxy");

/// Log target of the per-request line, so operators can route or silence it on its own.
const LOG_TARGET: &str = "sidekey::proxy";

/// Which prefix an endpoint serves.
#[derive(Debug, Clone, Copy)]
pub enum ProxyRoute {
    /// `/v1/proxy/{upstream}/…`.
    Named,
    /// `/v1/chatkit/…`, the upstream named `chatkit`.
    ChatKit,
}

impl ProxyRoute {
    /// The upstream's name and the path below it, from the request's path as the client sent it.
    fn split(self, path: &str) -> Option<(&str, &str)> {
        match self {
            Self::Named => {
                let rest = path.strip_prefix(PROXY_PREFIX)?.strip_prefix('/')?;
                let (name, below) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                (!name.is_empty()).then_some((name, below))
            }
            Self::ChatKit => {
                let below = path.strip_prefix(CHATKIT_PREFIX)?;
                (below.is_empty() || below.starts_with('/')).then_some((CHATKIT_UPSTREAM, below))
            }
        }
    }
}

impl Endpoint for ProxyRoute {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let mut response = match forward(*self, request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        response.set_data(OPERATION);
        Ok(response)
    }
}

async fn forward(route: ProxyRoute, mut request: Request) -> Result<Response, ApiError> {
    let state = request
        .data::<Arc<HttpState>>()
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the HTTP state is not installed"))?;
    let path = request.uri().path().to_owned();
    let Some((name, below)) = route.split(&path) else {
        return Err(ApiError::new(ErrorCode::NotFound, "name an upstream: /v1/proxy/{upstream}/…"));
    };
    let grant = authenticate(&request).await?;
    // Authenticated, so the header holds the token: kept to scrub it from what is forwarded.
    let token = request
        .headers()
        .typed_get::<Authorization<Bearer>>()
        .map(|header| header.token().to_owned())
        .unwrap_or_default();
    let upstream = state
        .proxy
        .as_ref()
        .and_then(|proxy| proxy.upstream(name))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no upstream is named {name:?}")))?;
    let session = &grant.session;
    let secret_key_id = session.secret_ref();
    if !upstream.allows(secret_key_id) {
        tracing::warn!(
            target: LOG_TARGET,
            upstream = upstream.name(),
            session_id = %session.id(),
            %secret_key_id,
            "refused: this secret_key_id may not be sent to this upstream"
        );
        count(upstream, StatusCode::FORBIDDEN, "forbidden");
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the session's secret_key_id may not be sent to upstream {:?}", upstream.name()),
        ));
    }
    let limit = upstream.max_request_body_bytes();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        count(upstream, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        return Err(too_large(limit));
    }

    let outcome = BodyOutcome::default();
    let body = RequestBody::new(BoxBody::from(request.take_body()), limit, outcome.clone());
    let subject = session.subject().map(ToString::to_string);
    let outbound = Outbound {
        method: request.method().clone(),
        path: below,
        query: request.uri().query(),
        headers: request.headers(),
        context: ClientContext {
            addr: request.remote_addr().as_socket_addr().map(std::net::SocketAddr::ip),
            proto: request.scheme().as_str(),
            session_id: session.id().to_string(),
            subject: subject.as_deref(),
            token: &token,
        },
    };
    let upstream_request = upstream.request(&outbound, &grant.secret, body).map_err(|error| match error {
        OutboundError::DotSegment | OutboundError::InvalidTarget => {
            ApiError::new(ErrorCode::InvalidRequest, error.to_string())
        }
        OutboundError::UnsendableKey => {
            tracing::error!(target: LOG_TARGET, upstream = upstream.name(), "{error}");
            ApiError::new(ErrorCode::Internal, error.to_string())
        }
    })?;
    drop(outbound);
    let method = request.method().clone();

    let started = Instant::now();
    let proxy = state.proxy.as_ref().expect("an upstream was found, so the proxy exists");
    let sent = proxy.send(upstream, upstream_request).await;
    let elapsed = started.elapsed();

    // The body counter is the truth about the body, whatever the upstream made of the broken request.
    if outcome.too_large() {
        count(upstream, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        return Err(too_large(limit));
    }
    if outcome.unreadable() {
        count(upstream, StatusCode::BAD_REQUEST, "client_body_error");
        return Err(ApiError::new(ErrorCode::InvalidRequest, "the request body could not be read"));
    }
    let upstream_response = match sent {
        Ok(response) => response,
        Err(SendError::Timeout) => {
            tracing::warn!(
                target: LOG_TARGET,
                upstream = upstream.name(),
                session_id = %session.id(),
                elapsed_ms = elapsed.as_millis() as u64,
                "upstream timed out"
            );
            count(upstream, StatusCode::GATEWAY_TIMEOUT, "upstream_timeout");
            return Err(ApiError::new(
                ErrorCode::UpstreamTimeout,
                format!("upstream {:?} did not answer in time", upstream.name()),
            ));
        }
        Err(SendError::Unreachable(cause)) => {
            tracing::warn!(
                target: LOG_TARGET,
                upstream = upstream.name(),
                session_id = %session.id(),
                %cause,
                "upstream failed"
            );
            count(upstream, StatusCode::BAD_GATEWAY, "upstream_error");
            return Err(ApiError::new(
                ErrorCode::UpstreamError,
                format!(
                    "upstream {:?} failed before answering (unreachable, refused, reset, or its TLS)",
                    upstream.name()
                ),
            ));
        }
    };

    let status = upstream_response.status();
    metrics::histogram!("sidekey_proxy_upstream_duration_seconds", "upstream" => upstream.name().to_owned())
        .record(elapsed.as_secs_f64());
    count(upstream, status, "forwarded");
    tracing::info!(
        target: LOG_TARGET,
        upstream = upstream.name(),
        %method,
        path = below,
        status = status.as_u16(),
        headers_ms = elapsed.as_millis() as u64,
        session_id = %session.id(),
        "proxied"
    );
    Ok(into_poem_response(upstream, upstream_response))
}

/// The upstream's answer as poem's, its body streamed.
fn into_poem_response(
    upstream: &Upstream,
    response: hyper::http::Response<hyper::body::Incoming>,
) -> Response {
    let (mut parts, incoming) = response.into_parts();
    super::headers::clean_response_headers(&mut parts.headers);
    let body = ResponseBody::new(incoming, upstream.idle_timeout, Arc::from(upstream.name()));
    let mut response = Response::builder().status(parts.status).body(Body::from(BoxBody::new(body)));
    *response.headers_mut() = parts.headers;
    response
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("the request body must be at most {limit} bytes"))
}

/// Counts one request that reached the proxy's decision, by upstream, status class and outcome.
fn count(upstream: &Upstream, status: StatusCode, outcome: &'static str) {
    metrics::counter!(
        "sidekey_proxy_requests_total",
        "upstream" => upstream.name().to_owned(),
        "status" => status_class(status),
        "outcome" => outcome,
    )
    .increment(1);
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_the_upstream_and_the_path_below_it() {
        let named = ProxyRoute::Named;
        assert_eq!(
            named.split("/v1/proxy/openai/v1/chat/completions"),
            Some(("openai", "/v1/chat/completions"))
        );
        assert_eq!(named.split("/v1/proxy/openai"), Some(("openai", "")));
        assert_eq!(named.split("/v1/proxy/openai/"), Some(("openai", "/")));
        assert_eq!(named.split("/v1/proxy/"), None);
        assert_eq!(named.split("/v1/proxy"), None);
        assert_eq!(named.split("/v1/proxyx/a"), None);
        let chatkit = ProxyRoute::ChatKit;
        assert_eq!(chatkit.split("/v1/chatkit"), Some(("chatkit", "")));
        assert_eq!(chatkit.split("/v1/chatkit/threads/1"), Some(("chatkit", "/threads/1")));
        assert_eq!(chatkit.split("/v1/chatkitx"), None);
    }
}
