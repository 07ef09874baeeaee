//! The protected proxy's transport: configured upstreams, the requests sent to them with the real key,
//! and the pooled client that sends them. The routes and their statuses are in [`route`].
//!
//! # Layout
//! - [`upstream`]: [`UpstreamSettings`] (what the operator wrote) validated into an [`Upstream`]: base
//!   URL, allowlist of `secret_key_id` patterns, how the key is presented, static headers, timeouts.
//! - [`headers`]: which headers cross in each direction, and the ones sidekey adds.
//! - [`encoded`]: percent-decoding, and whether a value carries the session token under any encoding.
//! - [`body`]: the request body counted against its limit, the response body cut when it stalls.
//! - [`client`]: the one pooled hyper client (HTTP/1.1 keep-alive, HTTP/2 by ALPN, rustls with ring) and
//!   the classification of its failures.
//! - [`usage`]: the request bodies' model and ceilings, and the token usage read from answers (JSON and
//!   streams, OpenAI and Anthropic formats) without holding a chunk back.
//! - [`metered`]: a metered answer read on its way to the client, its reservation settled when it ends.
//! - [`route`]: the routes, the order of their checks and their answers.
//! - [`websocket`]: upgrades connected to the upstream and relayed frame by frame, the live socket's
//!   limits, and the server's registry of live sockets.
//! - this file: [`Proxy`], the upstreams by name and the client, and [`Upstream::request`].

pub mod body;
pub mod client;
pub mod encoded;
pub mod headers;
pub mod metered;
pub mod route;
pub mod upstream;
pub mod usage;
pub mod websocket;

use std::collections::HashMap;

use hyper::body::Incoming;
use hyper::http::{HeaderMap, Method, Request, Response};
use sidekey_domain::SecretValue;

pub use body::{BodyOutcome, RequestBody, ResponseBody};
pub use client::SendError;
use encoded::{holds_token, percent_decode};
pub use headers::ClientContext;
pub use upstream::{Upstream, UpstreamConfigError, UpstreamSettings};

/// Why the proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// An upstream's settings are invalid.
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
    /// rustls refused its configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The configured upstreams and the client that reaches them.
pub struct Proxy {
    upstreams: HashMap<String, Upstream>,
    client: client::UpstreamClient,
    websockets: websocket::WebSocketConnector,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("upstreams", &self.upstreams.keys().collect::<Vec<_>>()).finish()
    }
}

impl Proxy {
    /// Validates every upstream and builds the client. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`ProxyConfigError`] names the first upstream setting at fault, or a duplicated name.
    pub fn new(settings: &[UpstreamSettings]) -> Result<Self, ProxyConfigError> {
        let mut upstreams = HashMap::with_capacity(settings.len());
        for settings in settings {
            let upstream = Upstream::new(settings)?;
            let name = upstream.name().to_owned();
            if upstreams.insert(name.clone(), upstream).is_some() {
                return Err(UpstreamConfigError::DuplicateName(name).into());
            }
        }
        let client = client::build(upstreams.values())?;
        let websockets = websocket::connector()?;
        Ok(Self { upstreams, client, websockets })
    }

    /// The upstream of that name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.get(name)
    }

    /// What each upstream admits, for the issuance of scoped sessions.
    pub fn policies(&self) -> Vec<sidekey_domain::UpstreamPolicy> {
        self.upstreams.values().map(|upstream| upstream.policy().clone()).collect()
    }

    /// The configured names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }

    /// The connector of upstream WebSockets.
    pub(crate) fn websockets(&self) -> &websocket::WebSocketConnector {
        &self.websockets
    }

    /// Sends `request` to `upstream` and waits for the response headers, at most the upstream's response
    /// timeout (connecting, and sending the body, included). The body then streams as the caller reads it.
    ///
    /// # Errors
    /// [`SendError::Timeout`] or [`SendError::Unreachable`].
    pub async fn send(
        &self,
        upstream: &Upstream,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(upstream.response_timeout, self.client.request(request)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(error)) => Err(client::classify(&error)),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// What a client asked for, below the upstream's name.
#[derive(Debug)]
pub struct Outbound<'a> {
    /// The method, forwarded as is.
    pub method: Method,
    /// The path below the upstream (`""` or starting with `/`), percent-encoded as the client sent it.
    pub path: &'a str,
    /// The query, as the client sent it.
    pub query: Option<&'a str>,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// Who is asking.
    pub context: ClientContext<'a>,
}

/// Why no upstream request could be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The path has a `.` or `..` segment (possibly percent-encoded): it could climb out of the base path.
    #[error("the path may not contain . or .. segments")]
    DotSegment,
    /// The path or query does not form a valid URI with the base URL.
    #[error("the path or query is not valid")]
    InvalidTarget,
    /// The real key cannot be written where this upstream wants it.
    #[error("the real key cannot be sent to this upstream")]
    UnsendableKey,
}

impl Upstream {
    /// The request to send upstream for `outbound`, with the real key placed as configured.
    ///
    /// # Errors
    /// [`OutboundError`].
    pub fn request(
        &self,
        outbound: &Outbound<'_>,
        key: &SecretValue,
        body: RequestBody,
    ) -> Result<Request<RequestBody>, OutboundError> {
        if outbound.path.split('/').any(headers::is_dot_segment) {
            return Err(OutboundError::DotSegment);
        }
        let query = outbound.query.map(|query| self.without_client_credential(query, outbound.context.token));
        let uri =
            self.uri(outbound.path, query.as_deref(), key.expose()).ok_or(OutboundError::InvalidTarget)?;
        let headers = headers::request_headers(outbound.headers, self, &outbound.context, key.expose())
            .map_err(|_| OutboundError::UnsendableKey)?;
        let mut request = Request::new(body);
        *request.method_mut() = outbound.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// The client's query without the parameter that carries the key here (a client must not choose it)
    /// and without any parameter holding the session token, literally or percent-encoded (an SDK that
    /// puts its "API key" there).
    fn without_client_credential(&self, query: &str, token: &str) -> String {
        let credential = match &self.credential {
            upstream::Credential::Query { name } => Some(name),
            upstream::Credential::Header { .. } => None,
        };
        // Decoding commutes with splitting at `&` (no escape contains one), so a query that does not hold
        // the token as a whole has no parameter that does.
        if credential.is_none() && !holds_token(query.as_bytes(), token, true) {
            return query.to_owned();
        }
        query
            .split('&')
            .filter(|pair| {
                let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
                let is_credential = credential.is_some_and(|name| {
                    let decoded = String::from_utf8_lossy(&percent_decode(key.as_bytes(), true)).into_owned();
                    key.eq_ignore_ascii_case(name) || upstream::percent_encode(&decoded) == *name
                });
                !is_credential && !holds_token(pair.as_bytes(), token, true)
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(query: Option<&str>) -> Upstream {
        let mut settings = UpstreamSettings::new("gemini", "https://example.com/v1beta");
        settings.allowed_secret_key_ids = vec!["*".to_owned()];
        settings.credential_query = query.map(str::to_owned);
        Upstream::new(&settings).unwrap()
    }

    #[test]
    fn the_clients_own_credential_parameter_is_removed_from_the_query() {
        let upstream = upstream(Some("key"));
        assert_eq!(
            upstream.without_client_credential("alt=sse&key=skt_x&KEY=y&k%65y=z&keys=1", "skt_t"),
            "alt=sse&keys=1"
        );
        assert_eq!(upstream.without_client_credential("key", "skt_t"), "");
        let header = self::upstream(None);
        assert_eq!(header.without_client_credential("key=1&a=2", "skt_t"), "key=1&a=2");
        assert_eq!(header.without_client_credential("key=skt_t&a=2&b=xskt_t", "skt_t"), "a=2");
    }

    #[test]
    fn a_parameter_holding_the_token_in_any_encoding_is_removed_from_the_query() {
        let header = upstream(None);
        let query = "a=1&key=%73kt_t&b=2&k=%2573%256B%2574%255Ft&c=x+y&d=skt%5Ft&q=+skt_t+&e=skt_u";
        assert_eq!(header.without_client_credential(query, "skt_t"), "a=1&b=2&c=x+y&e=skt_u");
        // Under the parameter's name, too.
        assert_eq!(header.without_client_credential("%73kt_t=1&z=2", "skt_t"), "z=2");
        assert_eq!(header.without_client_credential("q=two%20words&x=", "skt_t"), "q=two%20words&x=");
    }

    #[tokio::test]
    async fn duplicate_names_are_refused() {
        let mut settings = UpstreamSettings::new("a", "http://127.0.0.1:1");
        settings.allowed_secret_key_ids = vec!["*".to_owned()];
        let error = Proxy::new(&[settings.clone(), settings]).unwrap_err();
        assert!(
            matches!(error, ProxyConfigError::Upstream(UpstreamConfigError::DuplicateName(_))),
            "{error}"
        );
    }
}
