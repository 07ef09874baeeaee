//! `ANY /v1/proxy/{upstream}/{path…}` and `ANY /v1/chatkit[/{path…}]`: the session token in, the real key
//! out, bodies streamed both ways.
//!
//! The checks run in the contract's order, and none of the refusals contacts the upstream: the token
//! (401, before anything about upstreams is revealed), the upstream (404), whether the session's key may
//! go there and its scope names it (403 `forbidden`), the method (405: TRACE and CONNECT never go), the
//! path (400 `invalid_path`: the path checked is exactly the path forwarded), the route (403
//! `route_not_allowed`), the origin (403 `origin_not_allowed`), the body's size (413), the model (403
//! `model_not_allowed`), then the session's and its subject's rate and budgets (429 `rate_limited`,
//! `quota_exceeded`; 503 when they cannot be counted: fail closed).
//!
//! The body is read whole (bounded by the upstream's limit) only when a rule needs it: a model rule, a
//! per-request output ceiling (clamped in the body), or a token budget (the answer's usage must be read,
//! and an OpenAI chat stream asked for it). Otherwise it streams through untouched. Every error that
//! sidekey itself answers here carries the `error` member the LLM SDKs read.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::web::headers::authorization::Bearer;
use poem::web::headers::{Authorization, HeaderMapExt};
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use sidekey_application::ports::{Remaining, Reservation};
use sidekey_application::{AUDIT_TARGET, Grant};
use sidekey_domain::ProxyPath;
use zeroize::Zeroizing;

use super::metered::{MeteredBody, Reserved, Settlement};
use super::usage::{Endpoint as ApiEndpoint, RequestRules, UsageMeter, models_from_query, prepare_request};
use super::websocket;
use super::{
    BodyOutcome, ClientContext, Outbound, OutboundError, RequestBody, ResponseBody, SendError, Upstream,
};
use crate::api::auth::authenticate;
use crate::problem::{ApiError, ErrorCode};
use crate::{HttpSettings, HttpState};

/// The path prefix of named upstreams.
pub const PROXY_PREFIX: &str = "/v1/proxy";
/// The path prefix of the upstream named [`CHATKIT_UPSTREAM`].
pub const CHATKIT_PREFIX: &str = "/v1/chatkit";
/// The upstream that `/v1/chatkit` reaches.
pub const CHATKIT_UPSTREAM: &str = "chatkit";

/// `X-Sidekey-Requests-Remaining`: requests the session may still make.
const REQUESTS_REMAINING: &str = "x-sidekey-requests-remaining";
/// `X-Sidekey-Tokens-Remaining`: tokens the session (or, tighter, its subject) may still use.
const TOKENS_REMAINING: &str = "x-sidekey-tokens-remaining";

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
            Err(error) => error.for_sdks().into_response(),
        };
        response.set_data(OPERATION);
        Ok(response)
    }
}

/// A refusal of a request that reached an upstream's checks: counted, audited, answered.
fn refuse(upstream: &Upstream, grant: &Grant, reason: &'static str, error: ApiError) -> ApiError {
    metrics::counter!(
        "sidekey_proxy_refusals_total",
        "upstream" => upstream.name().to_owned(),
        "reason" => reason,
    )
    .increment(1);
    count(upstream, error.code().status(), reason);
    tracing::info!(
        target: AUDIT_TARGET,
        event = "proxy.refused",
        reason,
        upstream = upstream.name(),
        session_id = %grant.session.id(),
        subject = grant.session.subject().map(|subject| subject.as_str()),
    );
    error
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
    let upgrade = websocket::is_upgrade(request.headers());
    // A browser's WebSocket cannot send `Authorization`: its token may come as a subprotocol instead.
    let subprotocol_token = if upgrade && request.headers().typed_get::<Authorization<Bearer>>().is_none() {
        websocket::subprotocol_token(request.headers()).map(str::to_owned)
    } else {
        None
    };
    // EventSource and WebSocket from a browser: a one-time ticket in the query, when nothing else is sent.
    // An `EventSource` and a WebSocket upgrade are GETs; nothing else may spend a ticket.
    let ticket = if subprotocol_token.is_none()
        && request.method() == Method::GET
        && request.headers().typed_get::<Authorization<Bearer>>().is_none()
    {
        request.uri().query().and_then(ticket_in_query)
    } else {
        None
    };
    let (grant, token) = match (subprotocol_token, ticket) {
        (Some(token), _) => (state.sessions.verify(&token).await.map_err(ApiError::from)?, token),
        (None, Some(ticket)) => {
            let (grant, token) = state.sessions.redeem_ticket(&ticket).await.map_err(ApiError::from)?;
            (grant, token.expose().to_owned())
        }
        (None, None) => {
            let grant = authenticate(&request).await?;
            // Authenticated, so the header holds the token: kept to scrub it from what is forwarded.
            let token = request
                .headers()
                .typed_get::<Authorization<Bearer>>()
                .map(|header| header.token().to_owned())
                .unwrap_or_default();
            (grant, token)
        }
    };
    let proxy = state.proxy.as_ref();
    let upstream = proxy
        .and_then(|proxy| proxy.upstream(name))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no upstream is named {name:?}")))?;
    let session = &grant.session;
    let scope = session.scope();
    if !upstream.allows(session.secret_ref()) {
        tracing::warn!(
            target: LOG_TARGET,
            upstream = upstream.name(),
            session_id = %session.id(),
            secret_key_id = %session.secret_ref(),
            "refused: this secret_key_id may not be sent to this upstream"
        );
        count(upstream, StatusCode::FORBIDDEN, "forbidden");
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the session's secret_key_id may not be sent to upstream {:?}", upstream.name()),
        ));
    }
    if !scope.admits_upstream(&upstream.policy().name) {
        return Err(refuse(
            upstream,
            &grant,
            "forbidden",
            ApiError::new(
                ErrorCode::Forbidden,
                format!("the session's scope does not include upstream {:?}", upstream.name()),
            ),
        ));
    }
    let method = request.method().clone();
    if method == Method::TRACE || method == Method::CONNECT {
        return Err(refuse(
            upstream,
            &grant,
            "method_not_allowed",
            ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is never forwarded")),
        ));
    }
    let path = ProxyPath::parse(below).map_err(|error| {
        refuse(upstream, &grant, "invalid_path", ApiError::new(ErrorCode::InvalidPath, error.to_string()))
    })?;
    if !(upstream.policy().admits_route(method.as_str(), &path) && scope.admits_route(method.as_str(), &path))
    {
        return Err(refuse(
            upstream,
            &grant,
            "route_not_allowed",
            ApiError::new(
                ErrorCode::RouteNotAllowed,
                format!("{method} {} is outside the session's scope", path.as_str()),
            ),
        ));
    }
    let origin = request.headers().get(header::ORIGIN).map(|value| value.to_str().unwrap_or("\u{0}"));
    if !scope.admits_origin(origin) {
        return Err(refuse(
            upstream,
            &grant,
            "origin_not_allowed",
            ApiError::new(ErrorCode::OriginNotAllowed, "the request's Origin is outside the session's scope"),
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

    // Which rules read the body.
    let model_rule = upstream.policy().restricts_models(scope);
    let clamp = session.limits().max_output_tokens_per_request();
    let meters_tokens = state.metering.meters_tokens(session);
    let generates = generates(&method);
    let endpoint =
        if generates { ApiEndpoint::of(path.as_str(), upstream.usage_format()) } else { ApiEndpoint::Other };
    // The ticket is sidekey's: it never reaches the upstream.
    let query = request.uri().query().and_then(|query| {
        let kept = without_ticket(query);
        (!kept.is_empty() || query.is_empty()).then_some(kept)
    });
    if model_rule {
        for model in query.as_deref().map(models_from_query).unwrap_or_default() {
            check_model(upstream, &grant, &model)?;
        }
    }
    let reads_body = model_rule || clamp.is_some() || meters_tokens;
    let outcome = BodyOutcome::default();
    let mut include_usage_injected = false;
    let mut input_estimate = declared.unwrap_or(0) / 4;
    let body = if reads_body && method != Method::GET && method != Method::HEAD {
        let bytes = read_body(request.take_body(), limit).await.map_err(|error| match error {
            BodyReadError::TooLarge => {
                count(upstream, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
                too_large(limit)
            }
            BodyReadError::Unreadable => {
                count(upstream, StatusCode::BAD_REQUEST, "client_body_error");
                ApiError::new(ErrorCode::InvalidRequest, "the request body could not be read")
            }
        })?;
        input_estimate = bytes.len() as u64 / 4;
        let forwarded = if bytes.is_empty() {
            bytes
        } else {
            let rules = RequestRules {
                endpoint,
                format: upstream.usage_format(),
                max_output_tokens: clamp,
                inject_include_usage: meters_tokens,
            };
            let prepared = prepare_request(&bytes, &rules).map_err(|error| {
                let code = match error {
                    super::usage::BodyError::NotJson(_) | super::usage::BodyError::NotAnObject => {
                        ErrorCode::InvalidRequest
                    }
                    _ => ErrorCode::ValidationFailed,
                };
                refuse(upstream, &grant, "invalid_body", ApiError::new(code, error.to_string()))
            })?;
            if model_rule && let Some(model) = &prepared.model {
                check_model(upstream, &grant, model)?;
            }
            include_usage_injected = prepared.include_usage_injected;
            prepared.body.unwrap_or(bytes)
        };
        // The body's length is now known: hyper writes its Content-Length.
        request.headers_mut().remove(header::CONTENT_LENGTH);
        RequestBody::new(
            BoxBody::new(Full::new(forwarded).map_err(|never| match never {})),
            limit,
            outcome.clone(),
        )
    } else {
        RequestBody::new(BoxBody::from(request.take_body()), limit, outcome.clone())
    };

    // Rate and budgets last, so that a refusal above never counts.
    let reserved = if generates {
        Reserved { input: input_estimate, output: clamp.map_or(upstream.reserve_tokens(), u64::from) }
    } else {
        // Nothing is generated, so nothing is held, and the settlement of "nothing read" is nothing.
        Reserved { input: 0, output: 0 }
    };
    let admitted =
        state.metering.admit(session, reserved.input.saturating_add(reserved.output)).await.map_err(
            |error| {
                let (reason, error) = match &error {
                    sidekey_application::AdmitError::Refused(
                        sidekey_application::ports::Refusal::RateLimited { .. },
                    ) => ("rate_limited", ApiError::from(error)),
                    sidekey_application::AdmitError::Refused(_) => ("quota_exceeded", ApiError::from(error)),
                    sidekey_application::AdmitError::LedgerUnavailable(_) => {
                        ("store_unavailable", ApiError::from(error))
                    }
                };
                refuse(upstream, &grant, reason, error)
            },
        )?;

    let subject = session.subject().map(ToString::to_string);
    // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`; the upstream hears them as IPv4.
    let peer = request.remote_addr().as_socket_addr().map(|addr| addr.ip().to_canonical());
    // Without the settings installed nobody is trusted: the safe reading.
    let peer_is_trusted = peer.is_some_and(|peer| {
        request.data::<HttpSettings>().is_some_and(|settings| settings.proxy_trust.trusts(peer))
    });
    // HTTP/2 carries the host as `:authority`, which hyper keeps in the URI rather than a `Host` header.
    let host = match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok().map(str::to_owned),
        None => request.uri().authority().map(ToString::to_string),
    };
    let mut headers = request.headers().clone();
    if meters_tokens {
        // The meter reads the answer as sent: a compressed one could not be read.
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let outbound = Outbound {
        method: method.clone(),
        path: path.as_str(),
        query: query.as_deref(),
        headers: &headers,
        context: ClientContext {
            peer,
            peer_is_trusted,
            proto: request.scheme().as_str(),
            host: host.as_deref(),
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

    let proxy = proxy.expect("an upstream was found, so the proxy exists");
    if upgrade {
        count(upstream, StatusCode::SWITCHING_PROTOCOLS, "websocket");
        let watch = websocket::Watch {
            sessions: state.sessions.clone(),
            metering: state.metering.clone(),
            token: Zeroizing::new(token.clone()),
            session: session.clone(),
            admitted,
            relays: state.relays.clone(),
        };
        return websocket::open(proxy.websockets(), upstream, upstream_request, &request, watch).await;
    }
    let started = Instant::now();
    let sent = proxy.send(upstream, upstream_request).await;
    let elapsed = started.elapsed();
    let settle_nothing = |admitted: &Option<(Box<Reservation>, Remaining)>| {
        // Nothing was generated: give the reservation back at once rather than at its lapse.
        if let Some((reservation, _)) = admitted {
            let (metering, reservation) = (state.metering.clone(), reservation.clone());
            tokio::spawn(async move { metering.settle(&reservation, Default::default()).await });
        }
    };

    // The body counter is the truth about the body, whatever the upstream made of the broken request.
    if outcome.too_large() {
        settle_nothing(&admitted);
        count(upstream, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        return Err(too_large(limit));
    }
    if outcome.unreadable() {
        settle_nothing(&admitted);
        count(upstream, StatusCode::BAD_REQUEST, "client_body_error");
        return Err(ApiError::new(ErrorCode::InvalidRequest, "the request body could not be read"));
    }
    let upstream_response = match sent {
        Ok(response) => response,
        Err(SendError::Timeout) => {
            settle_nothing(&admitted);
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
            settle_nothing(&admitted);
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
        path = path.as_str(),
        status = status.as_u16(),
        headers_ms = elapsed.as_millis() as u64,
        session_id = %session.id(),
        "proxied"
    );
    let metered = admitted.map(|(reservation, remaining)| Metered {
        settlement: Settlement::new(
            state.metering.clone(),
            reservation,
            reserved,
            Arc::from(upstream.name()),
            upstream.usage_format(),
            status.is_success(),
        ),
        remaining,
        endpoint,
        strip: include_usage_injected,
    });
    Ok(into_poem_response(upstream, upstream_response, metered))
}

/// The query parameter that carries a one-time ticket.
pub const TICKET_PARAMETER: &str = "sidekey_ticket";

/// The ticket in a query (`sidekey_ticket=…`), if any; the first one counts.
fn ticket_in_query(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == TICKET_PARAMETER).then(|| value.to_owned())
    })
}

/// The query without any `sidekey_ticket` parameter.
fn without_ticket(query: &str) -> String {
    if !query.contains(TICKET_PARAMETER) {
        return query.to_owned();
    }
    query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != TICKET_PARAMETER)
        .collect::<Vec<_>>()
        .join("&")
}

/// What a metered answer needs on its way back.
struct Metered {
    settlement: Settlement,
    remaining: Remaining,
    endpoint: ApiEndpoint,
    strip: bool,
}

/// Whether a request of `method` can make an upstream generate tokens. GET, HEAD, OPTIONS and DELETE
/// read or remove what exists (a model list, a stored completion or response, a file): they are counted
/// as requests, but reserve no tokens and are settled with none. (`GET /v1/chat/completions` lists
/// stored completions: classified by its path alone it would be charged a whole reservation.)
fn generates(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE)
}

fn check_model(upstream: &Upstream, grant: &Grant, model: &str) -> Result<(), ApiError> {
    if upstream.policy().admits_model(model) && grant.session.scope().admits_model(model) {
        return Ok(());
    }
    Err(refuse(
        upstream,
        grant,
        "model_not_allowed",
        ApiError::new(
            ErrorCode::ModelNotAllowed,
            format!("the model {model:?} is outside the session's scope"),
        ),
    ))
}

enum BodyReadError {
    TooLarge,
    Unreadable,
}

/// The whole request body, at most `limit` bytes.
async fn read_body(body: Body, limit: u64) -> Result<Bytes, BodyReadError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(BoxBody::from(body), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(BodyReadError::TooLarge),
        Err(_) => Err(BodyReadError::Unreadable),
    }
}

/// The upstream's answer as poem's, its body streamed (through the meter when the request is metered).
fn into_poem_response(
    upstream: &Upstream,
    response: hyper::http::Response<hyper::body::Incoming>,
    metered: Option<Metered>,
) -> Response {
    let (mut parts, incoming) = response.into_parts();
    super::headers::clean_response_headers(&mut parts.headers);
    let body = ResponseBody::new(incoming, upstream.idle_timeout, Arc::from(upstream.name()));
    let body = match metered {
        None => Body::from(BoxBody::new(body)),
        Some(Metered { settlement, remaining, endpoint, strip }) => {
            let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
            let meter = UsageMeter::new(upstream.usage_format(), endpoint, content_type, strip);
            if strip {
                // The stripped usage chunk shortens the body.
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            for (name, value) in
                [(REQUESTS_REMAINING, remaining.requests), (TOKENS_REMAINING, remaining.tokens)]
            {
                if let Some(value) = value {
                    parts.headers.insert(name, HeaderValue::from(value));
                }
            }
            Body::from(BoxBody::new(MeteredBody::new(body, meter, settlement)))
        }
    };
    let mut response = Response::builder().status(parts.status).body(body);
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
    fn the_ticket_is_read_from_the_query_and_removed_from_what_is_forwarded() {
        assert_eq!(ticket_in_query("a=1&sidekey_ticket=skq_x&b=2").as_deref(), Some("skq_x"));
        assert_eq!(ticket_in_query("a=1&xsidekey_ticket=skq_x"), None);
        assert_eq!(without_ticket("a=1&sidekey_ticket=skq_x&b=2"), "a=1&b=2");
        assert_eq!(without_ticket("sidekey_ticket=skq_x"), "");
        assert_eq!(without_ticket("a=sidekey_ticket"), "a=sidekey_ticket");
    }

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
        assert_eq!(chatkit.split("/v1/chatkit/x"), Some(("chatkit", "/x")));
        assert_eq!(chatkit.split("/v1/chatkitx"), None);
    }
}
