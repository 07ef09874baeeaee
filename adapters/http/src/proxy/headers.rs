//! Which headers cross the proxy, in each direction.
//!
//! Towards the upstream: the client's end-to-end headers, minus its credential (the session token), the
//! hop-by-hop headers (RFC 9110 §7.6.1) and those its `Connection` header names, `Host` (the client sets
//! it for the upstream's authority), `Expect` (the client does not wait for `100 Continue`), `Cookie`
//! (the browser's cookies for sidekey's origin are not the upstream's business) and any `X-Sidekey-*` the
//! client tried to set; plus the configured static headers, the user context, `X-Forwarded-*` and the real
//! key. Any header whose value holds the session token, even percent-encoded, stays behind too.
//!
//! `Forwarded`, `X-Forwarded-*` and `X-Real-IP` cross only from a peer in `http.trusted_proxies`
//! ([`crate::trusted_proxies`]), `X-Forwarded-For` extended with that peer. From anyone else they are
//! dropped, and the upstream hears sidekey's own: `X-Forwarded-For` the peer, `X-Forwarded-Proto` how it
//! reached sidekey, `X-Forwarded-Host` the `Host` it asked for. Towards the client: the upstream's end-to-end headers minus hop-by-hop headers and the headers
//! that would set policy for sidekey's own origin (`Access-Control-*`: sidekey's CORS rules apply;
//! `Alt-Svc`, `Strict-Transport-Security`, `Set-Cookie`).

use std::net::IpAddr;

use hyper::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use zeroize::Zeroize;

use super::encoded::holds_token;
use super::upstream::{Credential, Upstream};
use crate::forward_auth::{SESSION_ID, SUBJECT};
use crate::trusted_proxies::{X_FORWARDED_FOR, X_REAL_IP};

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
        || is_forwarding(name)
        || name.as_str().starts_with("x-sidekey-")
}

/// Whether `name` tells of the request's way to sidekey (`Forwarded`, `X-Forwarded-For`, `-Proto`,
/// `-Host`, `-Port`, `-Prefix`…, `X-Real-IP`): believed only from a trusted proxy.
pub fn is_forwarding(name: &HeaderName) -> bool {
    name == header::FORWARDED || name == X_REAL_IP || name.as_str().starts_with("x-forwarded-")
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
    /// The TCP peer, appended to `X-Forwarded-For`.
    pub peer: Option<IpAddr>,
    /// Whether the peer is a trusted proxy, whose forwarding headers cross.
    pub peer_is_trusted: bool,
    /// `http` or `https`: how the peer reached sidekey (unless a trusted proxy already said how the
    /// client reached it).
    pub proto: &'a str,
    /// The `Host` (or HTTP/2 `:authority`) the client asked for: `X-Forwarded-Host` (unless a trusted
    /// proxy already said).
    pub host: Option<&'a str>,
    /// The session's id.
    pub session_id: String,
    /// The session's subject, when known.
    pub subject: Option<&'a str>,
    /// The session token the client presented: no header that holds it is forwarded, whatever its name
    /// (an SDK may repeat its "API key" in a header of its own, such as `x-api-key`) or encoding.
    pub token: &'a str,
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
    let trusted = context.peer_is_trusted;
    let mut headers = HeaderMap::with_capacity(client.len() + upstream.extra_headers.len() + 7);
    for (name, value) in client {
        let dropped = is_hop_by_hop(name)
            || listed.contains(name)
            || name == header::HOST
            || name == header::AUTHORIZATION
            || credential_header == Some(name)
            || name == header::COOKIE
            || name == header::EXPECT
            // Rewritten below, whoever sent it.
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || (is_forwarding(name) && !trusted)
            || name.as_str().starts_with("x-sidekey-")
            || holds_token(value.as_bytes(), context.token, false);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &upstream.extra_headers {
        headers.insert(name.clone(), value.clone());
    }
    forwarding_headers(client, context, &mut headers);

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

/// Writes `X-Forwarded-For`, `-Proto` and `-Host` into `headers`: a trusted proxy's, extended, or
/// sidekey's own. `headers` already holds the client's other forwarding headers when the peer is trusted.
fn forwarding_headers(client: &HeaderMap, context: &ClientContext<'_>, headers: &mut HeaderMap) {
    let trusted = context.peer_is_trusted;
    // X-Forwarded-For: the chain a trusted proxy started, then the peer.
    let mut forwarded_for = if trusted {
        client
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter(|value| !holds_token(value.as_bytes(), context.token, false))
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    };
    if let Some(peer) = context.peer {
        if !forwarded_for.is_empty() {
            forwarded_for.push_str(", ");
        }
        forwarded_for.push_str(&peer.to_string());
    }
    if let Ok(value) = HeaderValue::from_str(&forwarded_for)
        && !forwarded_for.is_empty()
    {
        headers.insert(X_FORWARDED_FOR, value);
    }
    // A trusted proxy that writes `Forwarded` gets its chain extended the same way (RFC 7239 §6: IPv6 in
    // quoted brackets).
    if trusted
        && client.contains_key(header::FORWARDED)
        && let Some(peer) = context.peer
    {
        let node = match peer {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        };
        if let Ok(value) = HeaderValue::from_str(&node) {
            headers.append(header::FORWARDED, value);
        }
    }

    // X-Forwarded-Proto: a trusted TLS-terminating proxy's, else how the peer reached sidekey.
    let proto = client
        .get(X_FORWARDED_PROTO)
        .filter(|value| trusted && matches!(value.as_bytes(), b"http" | b"https"))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_str(context.proto).unwrap_or(HeaderValue::from_static("http")));
    headers.insert(X_FORWARDED_PROTO, proto);

    // X-Forwarded-Host: a trusted proxy's (kept with the client's headers), else the Host asked for.
    if !headers.contains_key(X_FORWARDED_HOST)
        && let Some(host) = context.host.filter(|host| !holds_token(host.as_bytes(), context.token, false))
        && let Ok(value) = HeaderValue::from_str(host)
    {
        headers.insert(X_FORWARDED_HOST, value);
    }
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
            peer: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
            peer_is_trusted: false,
            proto: "http",
            host: Some("sidekey.example"),
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
        assert_eq!(headers["x-forwarded-for"], "10.0.0.7");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["accept"], "text/event-stream");
    }

    /// Every forwarding header a client might forge, and what a trusted proxy would send.
    const FORWARDING: [(&str, &str); 9] = [
        ("x-forwarded-for", "203.0.113.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "8443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-server", "proxy-1"),
        ("x-real-ip", "203.0.113.2"),
        ("forwarded", "for=203.0.113.3;proto=https"),
        ("content-type", "application/json"),
    ];

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_replaced_by_sidekeys_own() {
        let headers =
            request_headers(&client_headers(&FORWARDING), &upstream(|_| {}), &context(), "k").unwrap();
        for gone in ["x-forwarded-port", "x-forwarded-prefix", "x-forwarded-server", "x-real-ip", "forwarded"]
        {
            assert!(!headers.contains_key(gone), "{gone} crossed: {headers:?}");
        }
        let all = |name: &str| headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("x-forwarded-for"), ["10.0.0.7"]);
        assert_eq!(all("x-forwarded-proto"), ["http"]);
        assert_eq!(all("x-forwarded-host"), ["sidekey.example"]);
        assert_eq!(all("content-type"), ["application/json"]);
    }

    #[test]
    fn forwarding_headers_from_a_trusted_proxy_are_kept_and_extended() {
        let mut context = context();
        context.peer_is_trusted = true;
        let headers =
            request_headers(&client_headers(&FORWARDING), &upstream(|_| {}), &context, "k").unwrap();
        let all = |name: &str| headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("x-forwarded-for"), ["203.0.113.1, 10.0.0.7"]);
        assert_eq!(all("x-forwarded-proto"), ["https"]);
        assert_eq!(all("x-forwarded-host"), ["evil.example"]);
        assert_eq!(all("x-forwarded-port"), ["8443"]);
        assert_eq!(all("x-forwarded-prefix"), ["/admin"]);
        assert_eq!(all("x-real-ip"), ["203.0.113.2"]);
        assert_eq!(all("forwarded"), ["for=203.0.113.3;proto=https", "for=10.0.0.7"]);

        // Only what the proxy said is kept; sidekey fills in the rest, and an IPv6 peer is quoted.
        context.peer = Some("2001:db8::5".parse().unwrap());
        let client = client_headers(&[("forwarded", "for=203.0.113.3"), ("x-forwarded-proto", "ftp")]);
        let headers = request_headers(&client, &upstream(|_| {}), &context, "k").unwrap();
        let all = |name: &str| headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("x-forwarded-for"), ["2001:db8::5"]);
        assert_eq!(all("x-forwarded-proto"), ["http"], "not a protocol sidekey speaks");
        assert_eq!(all("x-forwarded-host"), ["sidekey.example"]);
        assert_eq!(all("forwarded"), ["for=203.0.113.3", "for=\"[2001:db8::5]\""]);
    }

    #[test]
    fn a_header_holding_the_token_percent_encoded_does_not_cross() {
        let mut context = context();
        context.peer_is_trusted = true;
        context.host = Some("skt_token.example");
        let client = client_headers(&[
            ("x-api-key", "%73kt_token"),
            ("x-goog-api-key", "%2573%256B%2574%255Ftoken"),
            ("x-forwarded-for", "skt_token"),
            ("x-forwarded-host", "%73kt_token"),
            ("x-other", "skt%5Ftoke"),
        ]);
        let headers = request_headers(&client, &upstream(|_| {}), &context, "k").unwrap();
        assert!(!headers.contains_key("x-api-key") && !headers.contains_key("x-goog-api-key"), "{headers:?}");
        assert!(!headers.contains_key("x-forwarded-host"), "neither the proxy's nor the Host: {headers:?}");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.7");
        assert_eq!(headers["x-other"], "skt%5Ftoke", "not the token");
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
