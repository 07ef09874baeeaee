//! Which headers cross the proxy, in each direction.
//!
//! Towards the upstream: the client's end-to-end headers, minus its credential (the session token), the
//! hop-by-hop headers (RFC 9110 §7.6.1) and those its `Connection` header names, `Host` (the client sets
//! it for the upstream's authority), `Expect` (the client does not wait for `100 Continue`), `Cookie`
//! (the browser's cookies for sidekey's origin are not the upstream's business) and any `X-Sidekey-*` the
//! client tried to set; plus the configured static headers, the user context, `X-Forwarded-*` and the real
//! key. Towards the client: the upstream's end-to-end headers minus hop-by-hop headers and the headers
//! that would set policy for sidekey's own origin (`Access-Control-*`: sidekey's CORS rules apply;
//! `Alt-Svc`, `Strict-Transport-Security`, `Set-Cookie`).

use std::net::IpAddr;

use hyper::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroize;

use super::upstream::{Credential, Upstream};
use crate::forward_auth::{SESSION_ID, SUBJECT};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Keep-Alive` and `Proxy-Connection`): they
/// describe one connection and never cross a proxy.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is hop-by-hop.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Whether sidekey sets or removes `name` itself on the way to the upstream, so the configuration may not
/// name it as the credential header or a static header.
pub fn is_managed(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == header::EXPECT
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
        || name.as_str().starts_with("x-sidekey-")
}

/// Whether a path segment is `.` or `..`, percent-encoded or not: upstreams resolve them, which would let
/// a client climb out of the base path the operator configured.
pub fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.replace("%2e", ".").replace("%2E", ".");
    decoded == "." || decoded == ".."
}

/// The header names a `Connection` header lists: hop-by-hop for this message only.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// Who sent the request, for the headers that tell the upstream.
#[derive(Debug, Clone)]
pub struct ClientContext<'a> {
    /// The client's address, appended to `X-Forwarded-For`.
    pub addr: Option<IpAddr>,
    /// `http` or `https`: how the client reached sidekey (unless a proxy in front already said so).
    pub proto: &'a str,
    /// The session's id.
    pub session_id: String,
    /// The session's subject, when known.
    pub subject: Option<&'a str>,
    /// The session token the client presented: no header that holds it is forwarded, whatever its name
    /// (an SDK may repeat its "API key" in a header of its own, such as `x-api-key`).
    pub token: &'a str,
}

/// Whether `haystack` contains `needle` (a non-empty token).
pub(crate) fn holds(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle.as_bytes())
}

/// The real key cannot travel in a header (a character a header value may not hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the real key cannot be written as a header value")]
pub struct UnsendableKey;

/// The headers to send upstream for a client request with `client` headers.
///
/// # Errors
/// [`UnsendableKey`] when the key does not fit in a header value.
pub fn request_headers(
    client: &HeaderMap,
    upstream: &Upstream,
    context: &ClientContext<'_>,
    key: &str,
) -> Result<HeaderMap, UnsendableKey> {
    let listed = connection_listed(client);
    let credential_header = match &upstream.credential {
        Credential::Header { name, .. } => Some(name),
        Credential::Query { .. } => None,
    };
    let mut headers = HeaderMap::with_capacity(client.len() + upstream.extra_headers.len() + 6);
    for (name, value) in client {
        let dropped = is_hop_by_hop(name)
            || listed.contains(name)
            || name == header::HOST
            || name == header::AUTHORIZATION
            || credential_header == Some(name)
            || name == header::COOKIE
            || name == header::EXPECT
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name.as_str().starts_with("x-sidekey-")
            || holds(value.as_bytes(), context.token);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &upstream.extra_headers {
        headers.insert(name.clone(), value.clone());
    }

    // X-Forwarded-For: the chain a proxy in front of sidekey may have started, then the client.
    let mut forwarded_for = client
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(addr) = context.addr {
        if !forwarded_for.is_empty() {
            forwarded_for.push_str(", ");
        }
        forwarded_for.push_str(&addr.to_string());
    }
    if let Ok(value) = HeaderValue::from_str(&forwarded_for)
        && !forwarded_for.is_empty()
    {
        headers.insert(X_FORWARDED_FOR, value);
    }
    // X-Forwarded-Proto: kept from a TLS-terminating proxy in front, else how the client reached sidekey.
    let proto = client
        .get(X_FORWARDED_PROTO)
        .filter(|value| matches!(value.as_bytes(), b"http" | b"https"))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(context.proto).unwrap_or(HeaderValue::from_static("http")));
    headers.insert(X_FORWARDED_PROTO, proto);

    if let Ok(value) = HeaderValue::from_str(&context.session_id) {
        headers.insert(SESSION_ID, value);
    }
    if let Some(value) = context.subject.and_then(|subject| HeaderValue::from_str(subject).ok()) {
        headers.insert(SUBJECT, value);
    }

    if let Credential::Header { name, prefix } = &upstream.credential {
        let mut text = String::with_capacity(prefix.len() + key.len());
        text.push_str(prefix);
        text.push_str(key);
        let value = HeaderValue::from_str(&text);
        // The copy is about to be freed; the header value is what travels.
        text.zeroize();
        let mut value = value.map_err(|_| UnsendableKey)?;
        // HTTP/2: never put the key in the HPACK dynamic table (RFC 7541 §7.1.3).
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
    Ok(headers)
}

/// Removes from an upstream's response the headers that must not reach the client.
pub fn clean_response_headers(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    for name in [header::ALT_SVC, header::STRICT_TRANSPORT_SECURITY, header::SET_COOKIE] {
        headers.remove(name);
    }
    let cors: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with("access-control-")).cloned().collect();
    for name in cors {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::proxy::UpstreamSettings;

    fn upstream(configure: impl FnOnce(&mut UpstreamSettings)) -> Upstream {
        let mut settings = UpstreamSettings::new("openai", "https://api.example.com");
        settings.allowed_secret_key_ids = vec!["*".to_owned()];
        configure(&mut settings);
        Upstream::new(&settings).unwrap()
    }

    fn context() -> ClientContext<'static> {
        ClientContext {
            addr: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
            proto: "http",
            session_id: "0b7c6f1e-0000-4000-8000-000000000000".to_owned(),
            subject: Some("user_1"),
            token: "skt_token",
        }
    }

    fn client_headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn the_client_credential_hop_by_hop_and_spoofed_headers_do_not_cross() {
        let client = client_headers(&[
            ("authorization", "Bearer skt_token"),
            ("connection", "keep-alive, x-custom-hop"),
            ("keep-alive", "timeout=5"),
            ("x-custom-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("host", "sidekey.local"),
            ("cookie", "session=abc"),
            ("expect", "100-continue"),
            ("x-sidekey-subject", "admin"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("x-forwarded-for", "203.0.113.1"),
            ("x-api-key", "skt_token"),
            ("x-other", "prefix skt_token suffix"),
        ]);
        let headers = request_headers(&client, &upstream(|_| {}), &context(), "sk-real").unwrap();
        for gone in [
            "connection",
            "keep-alive",
            "x-custom-hop",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "host",
            "cookie",
            "expect",
            "x-api-key",
            "x-other",
        ] {
            assert!(!headers.contains_key(gone), "{gone} crossed: {headers:?}");
        }
        assert_eq!(headers["authorization"], "Bearer sk-real");
        assert!(headers["authorization"].is_sensitive());
        assert_eq!(headers["x-sidekey-subject"], "user_1");
        assert_eq!(headers["x-sidekey-session-id"], "0b7c6f1e-0000-4000-8000-000000000000");
        assert_eq!(headers["x-forwarded-for"], "203.0.113.1, 10.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["accept"], "text/event-stream");
    }

    #[test]
    fn a_custom_credential_header_replaces_the_clients_and_authorization_is_still_dropped() {
        let upstream = upstream(|settings| {
            settings.credential_header = "x-api-key".to_owned();
            settings.credential_scheme = String::new();
            settings.headers.insert("anthropic-version".to_owned(), "2023-06-01".to_owned());
        });
        let client = client_headers(&[
            ("authorization", "Bearer skt_token"),
            ("x-api-key", "skt_token"),
            ("anthropic-version", "1999"),
        ]);
        let mut context = context();
        context.subject = None;
        let headers = request_headers(&client, &upstream, &context, "sk-ant").unwrap();
        assert!(!headers.contains_key("authorization"));
        assert_eq!(headers.get_all("x-api-key").iter().collect::<Vec<_>>(), ["sk-ant"]);
        assert_eq!(headers.get_all("anthropic-version").iter().collect::<Vec<_>>(), ["2023-06-01"]);
        assert!(!headers.contains_key("x-sidekey-subject"));
    }

    #[test]
    fn a_query_credential_sends_no_credential_header() {
        let upstream = upstream(|settings| settings.credential_query = Some("key".to_owned()));
        let client = client_headers(&[("authorization", "Bearer skt_token")]);
        let headers = request_headers(&client, &upstream, &context(), "sk-q").unwrap();
        assert!(!headers.contains_key("authorization"));
        assert!(headers.values().all(|value| value != "sk-q"));
    }

    #[test]
    fn a_key_that_cannot_be_a_header_value_is_refused() {
        assert_eq!(
            request_headers(&HeaderMap::new(), &upstream(|_| {}), &context(), "bad\nkey"),
            Err(UnsendableKey)
        );
    }

    #[test]
    fn response_headers_lose_hop_by_hop_and_origin_policy_headers() {
        let mut headers = client_headers(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("access-control-allow-origin", "*"),
            ("alt-svc", "h3=\":443\""),
            ("strict-transport-security", "max-age=1"),
            ("set-cookie", "__cf_bm=1"),
            ("content-type", "text/event-stream"),
            ("x-request-id", "req_1"),
        ]);
        clean_response_headers(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-request-id"]);
    }

    #[test]
    fn dot_segments_are_recognised_encoded_or_not() {
        for segment in [".", "..", "%2e", "%2E%2e", ".%2E"] {
            assert!(is_dot_segment(segment), "{segment}");
        }
        for segment in ["", "...", "a.", ".well-known", "%2f"] {
            assert!(!is_dot_segment(segment), "{segment}");
        }
    }
}
