//! One configured upstream: where it lives, which real keys it may receive, and how it wants them.
//!
//! Everything is validated once, at start-up ([`Upstream::new`]): a request never meets a malformed base
//! URL, header name or allowlist pattern.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::http::uri::{Authority, Scheme};
use hyper::http::{HeaderName, HeaderValue, Uri};
use sidekey_domain::{ModelPattern, RoutePattern, SecretPattern, SecretRef, UpstreamName, UpstreamPolicy};

use super::usage::UsageFormat;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::headers;

/// What the operator configured for one upstream (`[[upstreams]]`), before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UpstreamSettings {
    /// The name in `/v1/proxy/{name}/…`: 1–64 of `A-Z a-z 0-9 . _ -`, unique; `chatkit` also serves
    /// `/v1/chatkit/…`.
    pub name: String,
    /// `http(s)://host[:port][/base/path]`, without credentials, query or fragment: request paths are
    /// joined under the base path.
    pub base_url: String,
    /// The `secret_key_id`s whose real key may be sent here: exact names, or a prefix ending in `*`
    /// (`*` alone: any); sessions of other keys get 403.
    pub allowed_secret_key_ids: Vec<String>,
    /// The header that carries the real key (`x-api-key` for Anthropic).
    #[serde(default = "UpstreamSettings::default_credential_header")]
    pub credential_header: String,
    /// Written before the key with one space; `""` sends the bare key.
    #[serde(default = "UpstreamSettings::default_credential_scheme")]
    pub credential_scheme: String,
    /// Send the key as this query parameter instead of a header (e.g. `key` for Google's Gemini API).
    #[serde(default)]
    pub credential_query: Option<String>,
    /// Static headers added to every request, replacing the client's header of the same name (e.g.
    /// `anthropic-version`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Longest wait for a new connection, TLS handshake included, in milliseconds (504 after).
    #[serde(default = "UpstreamSettings::default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait from sending the request (body included) to the response headers, in milliseconds
    /// (504 after).
    #[serde(default = "UpstreamSettings::default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Longest silence between two chunks of the response body, in milliseconds; the stream is cut after
    /// it.
    #[serde(default = "UpstreamSettings::default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Largest request body, in bytes, counted as it streams (413 above it, with or without a
    /// `Content-Length`).
    #[serde(default = "UpstreamSettings::default_max_request_body_bytes")]
    pub max_request_body_bytes: u64,
    /// The routes sessions may call here: `"METHOD /path"`, a final `/*` for a path and everything below
    /// it, `ANY` for every method (e.g. `"POST /v1/chat/completions"`); absent: any route, with a warning
    /// at start-up.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// The models sessions may ask for here (the JSON body's top-level `model`, or a `model` query
    /// parameter): exact names or trailing-`*` patterns; absent: any model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// How token usage is read from this upstream's answers: `openai`, `anthropic` or `none`.
    #[serde(default)]
    pub usage: UsageFormat,
    /// Tokens reserved for a request's answer before it is forwarded, when no per-request ceiling
    /// (`max_output_tokens_per_request`) applies; the request's input estimate is added to it.
    #[serde(default = "UpstreamSettings::default_reserve_tokens")]
    pub reserve_tokens: u64,
    /// Longest a proxied WebSocket stays open, in seconds (closed with 1008 after).
    #[serde(default = "UpstreamSettings::default_websocket_max_seconds")]
    pub websocket_max_seconds: u64,
    /// Longest a proxied WebSocket may carry no message, in seconds (closed with 1008 after).
    #[serde(default = "UpstreamSettings::default_websocket_idle_seconds")]
    pub websocket_idle_seconds: u64,
}

impl UpstreamSettings {
    /// The credential header when none is configured: `Authorization`, as every OpenAI-compatible API.
    pub const DEFAULT_CREDENTIAL_HEADER: &'static str = "authorization";
    /// The credential scheme when none is configured (RFC 6750).
    pub const DEFAULT_CREDENTIAL_SCHEME: &'static str = "Bearer";
    /// 5 s: a healthy upstream accepts a connection (and finishes a TLS handshake) in milliseconds; an
    /// unreachable one should fail fast rather than hold the client.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// 300 s: a non-streamed completion only answers once the model has finished writing, which for long
    /// outputs of large models takes minutes (OpenAI's own SDK waits 600 s).
    pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
    /// 300 s: a streamed answer of a reasoning model may stay silent for minutes while it thinks.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    /// 10 MiB: a long chat history with a few images; far above a chat message, far below what could
    /// exhaust memory (bodies stream, but an upstream may buffer them).
    pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 10 * 1024 * 1024;
    /// 4096: the default output ceiling of most chat models, so a request without one of its own
    /// reserves about what it can use.
    pub const DEFAULT_RESERVE_TOKENS: u64 = 4096;
    /// 30 minutes: a long voice conversation; OpenAI's Realtime sessions last at most that long too.
    pub const DEFAULT_WEBSOCKET_MAX: Duration = Duration::from_secs(30 * 60);
    /// 5 minutes: a conversation paused that long is over; the socket's resources go back.
    pub const DEFAULT_WEBSOCKET_IDLE: Duration = Duration::from_secs(5 * 60);

    /// Settings with every default, for `name` at `base_url`, allowing no key yet.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            allowed_secret_key_ids: Vec::new(),
            credential_header: Self::default_credential_header(),
            credential_scheme: Self::default_credential_scheme(),
            credential_query: None,
            headers: BTreeMap::new(),
            connect_timeout_ms: Self::default_connect_timeout_ms(),
            response_timeout_ms: Self::default_response_timeout_ms(),
            idle_timeout_ms: Self::default_idle_timeout_ms(),
            max_request_body_bytes: Self::default_max_request_body_bytes(),
            routes: None,
            models: None,
            usage: UsageFormat::default(),
            reserve_tokens: Self::default_reserve_tokens(),
            websocket_max_seconds: Self::default_websocket_max_seconds(),
            websocket_idle_seconds: Self::default_websocket_idle_seconds(),
        }
    }

    fn default_credential_header() -> String {
        Self::DEFAULT_CREDENTIAL_HEADER.to_owned()
    }
    fn default_credential_scheme() -> String {
        Self::DEFAULT_CREDENTIAL_SCHEME.to_owned()
    }
    fn default_connect_timeout_ms() -> u64 {
        millis(Self::DEFAULT_CONNECT_TIMEOUT)
    }
    fn default_response_timeout_ms() -> u64 {
        millis(Self::DEFAULT_RESPONSE_TIMEOUT)
    }
    fn default_idle_timeout_ms() -> u64 {
        millis(Self::DEFAULT_IDLE_TIMEOUT)
    }
    fn default_max_request_body_bytes() -> u64 {
        Self::DEFAULT_MAX_REQUEST_BODY_BYTES
    }
    fn default_reserve_tokens() -> u64 {
        Self::DEFAULT_RESERVE_TOKENS
    }
    fn default_websocket_max_seconds() -> u64 {
        Self::DEFAULT_WEBSOCKET_MAX.as_secs()
    }
    fn default_websocket_idle_seconds() -> u64 {
        Self::DEFAULT_WEBSOCKET_IDLE.as_secs()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Why the upstream configuration was refused at start-up. Each variant names the upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamConfigError {
    /// The name is empty, too long, or not usable as one path segment.
    #[error("upstream name {0:?} must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    /// Two upstreams share a name.
    #[error("upstream {0:?} is configured twice")]
    DuplicateName(String),
    /// The base URL is not an absolute `http://` or `https://` URL without credentials, query or fragment.
    #[error("upstream {name:?}: base_url {url:?} {reason}")]
    InvalidBaseUrl {
        /// The upstream.
        name: String,
        /// The URL as configured (never holds a key: URLs with credentials are refused, unprinted).
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No `secret_key_id` is allowed: every request would be refused.
    #[error("upstream {0:?}: allowed_secret_key_ids is empty, so no session could use it")]
    NothingAllowed(String),
    /// An allowlist entry is neither a valid `secret_key_id` nor one followed by a single trailing `*`.
    #[error(
        "upstream {name:?}: allowed_secret_key_ids entry {pattern:?} is not a secret_key_id or a trailing-* pattern"
    )]
    InvalidPattern {
        /// The upstream.
        name: String,
        /// The entry.
        pattern: String,
    },
    /// A header name cannot be sent, or names a header sidekey manages itself.
    #[error("upstream {name:?}: {what} {header:?} {reason}")]
    InvalidHeader {
        /// The upstream.
        name: String,
        /// Which setting (`credential_header`, `headers`).
        what: &'static str,
        /// The header name.
        header: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The credential scheme or query parameter cannot be written.
    #[error("upstream {name:?}: {what} {value:?} is not valid")]
    InvalidCredential {
        /// The upstream.
        name: String,
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A `routes` entry is not a route pattern.
    #[error("upstream {name:?}: routes entry {route:?}: {reason}")]
    InvalidRoute {
        /// The upstream.
        name: String,
        /// The entry.
        route: String,
        /// Why it is refused.
        reason: String,
    },
    /// A `models` entry is not a model pattern.
    #[error("upstream {name:?}: models entry {model:?}: {reason}")]
    InvalidModel {
        /// The upstream.
        name: String,
        /// The entry.
        model: String,
        /// Why it is refused.
        reason: String,
    },
    /// `routes` or `models` is an empty list: nothing could pass (leave it out to admit any).
    #[error("upstream {0:?}: routes and models must not be empty lists (leave them out to admit any)")]
    EmptyList(String),
    /// A timeout or limit is zero.
    #[error("upstream {name:?}: {what} must be greater than zero")]
    Zero {
        /// The upstream.
        name: String,
        /// Which setting.
        what: &'static str,
    },
}

/// How the real key travels to the upstream.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// In a header: `<name>: <scheme> <key>`, or `<name>: <key>` when the scheme is empty.
    Header {
        /// The header.
        name: HeaderName,
        /// The scheme, with its trailing space, or empty.
        prefix: String,
    },
    /// In the query string: `?<name>=<key>` (percent-encoded).
    Query {
        /// The parameter name, already percent-encoded.
        name: String,
    },
}

/// A validated upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: String,
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without its trailing `/` (empty for the root).
    base_path: String,
    /// What sessions may do here: the keys, routes and models this upstream admits.
    policy: UpstreamPolicy,
    pub(crate) credential: Credential,
    pub(crate) extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_request_body_bytes: u64,
    pub(crate) usage: UsageFormat,
    pub(crate) reserve_tokens: u64,
    pub(crate) websocket_max: Duration,
    pub(crate) websocket_idle: Duration,
}

/// Longest upstream name: one readable path segment.
const MAX_NAME_LEN: usize = 64;

impl Upstream {
    /// Validates `settings`.
    ///
    /// # Errors
    /// [`UpstreamConfigError`] names the upstream and the setting at fault.
    pub fn new(settings: &UpstreamSettings) -> Result<Self, UpstreamConfigError> {
        let name = settings.name.clone();
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && name != "."
            && name != "..";
        if !name_ok {
            return Err(UpstreamConfigError::InvalidName(name));
        }
        let (scheme, authority, base_path) = parse_base_url(&name, &settings.base_url)?;

        if settings.allowed_secret_key_ids.is_empty() {
            return Err(UpstreamConfigError::NothingAllowed(name));
        }
        let allowed = settings
            .allowed_secret_key_ids
            .iter()
            .map(|text| {
                SecretPattern::parse(text).ok_or_else(|| UpstreamConfigError::InvalidPattern {
                    name: name.clone(),
                    pattern: text.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let credential = match &settings.credential_query {
            Some(parameter) => {
                if parameter.is_empty() {
                    return Err(UpstreamConfigError::InvalidCredential {
                        name,
                        what: "credential_query",
                        value: parameter.clone(),
                    });
                }
                Credential::Query { name: percent_encode(parameter) }
            }
            None => {
                let header = managed_header_name(&name, "credential_header", &settings.credential_header)?;
                let scheme = settings.credential_scheme.trim();
                let scheme_ok = scheme.bytes().all(|b| b.is_ascii_graphic());
                if !scheme_ok {
                    return Err(UpstreamConfigError::InvalidCredential {
                        name,
                        what: "credential_scheme",
                        value: settings.credential_scheme.clone(),
                    });
                }
                let prefix = if scheme.is_empty() { String::new() } else { format!("{scheme} ") };
                Credential::Header { name: header, prefix }
            }
        };

        let mut extra_headers = Vec::with_capacity(settings.headers.len());
        for (header, value) in &settings.headers {
            let header_name = managed_header_name(&name, "headers", header)?;
            if matches!(&credential, Credential::Header { name: credential, .. } if *credential == header_name)
            {
                return Err(UpstreamConfigError::InvalidHeader {
                    name,
                    what: "headers",
                    header: header.clone(),
                    reason: "is the credential header: the real key goes there",
                });
            }
            let value = HeaderValue::from_str(value).map_err(|_| UpstreamConfigError::InvalidHeader {
                name: name.clone(),
                what: "headers",
                header: header.clone(),
                reason: "has a value that cannot be sent in a header",
            })?;
            extra_headers.push((header_name, value));
        }

        for (what, value) in [
            ("connect_timeout_ms", settings.connect_timeout_ms),
            ("response_timeout_ms", settings.response_timeout_ms),
            ("idle_timeout_ms", settings.idle_timeout_ms),
            ("max_request_body_bytes", settings.max_request_body_bytes),
            ("websocket_max_seconds", settings.websocket_max_seconds),
            ("websocket_idle_seconds", settings.websocket_idle_seconds),
        ] {
            if value == 0 {
                return Err(UpstreamConfigError::Zero { name, what });
            }
        }

        let routes = settings
            .routes
            .as_ref()
            .map(|routes| {
                routes
                    .iter()
                    .map(|text| {
                        RoutePattern::parse(text).map_err(|error| UpstreamConfigError::InvalidRoute {
                            name: name.clone(),
                            route: text.clone(),
                            reason: error.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let models = settings
            .models
            .as_ref()
            .map(|models| {
                models
                    .iter()
                    .map(|text| {
                        ModelPattern::parse(text).map_err(|error| UpstreamConfigError::InvalidModel {
                            name: name.clone(),
                            model: text.clone(),
                            reason: error.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        if routes.as_ref().is_some_and(Vec::is_empty) || models.as_ref().is_some_and(Vec::is_empty) {
            return Err(UpstreamConfigError::EmptyList(name));
        }
        let upstream_name =
            UpstreamName::parse(&name).map_err(|_| UpstreamConfigError::InvalidName(name.clone()))?;
        let policy = UpstreamPolicy { name: upstream_name, allowed_keys: allowed, routes, models };
        Ok(Self {
            name,
            scheme,
            authority,
            base_path,
            policy,
            credential,
            extra_headers,
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            response_timeout: Duration::from_millis(settings.response_timeout_ms),
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            max_request_body_bytes: settings.max_request_body_bytes,
            usage: settings.usage,
            reserve_tokens: settings.reserve_tokens,
            websocket_max: Duration::from_secs(settings.websocket_max_seconds),
            websocket_idle: Duration::from_secs(settings.websocket_idle_seconds),
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a session for `secret` may have its real key sent here.
    pub fn allows(&self, secret: &SecretRef) -> bool {
        self.policy.allows_key(secret)
    }

    /// What sessions may do here: the keys, routes and models it admits.
    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// How token usage is read from its answers.
    pub fn usage_format(&self) -> UsageFormat {
        self.usage
    }

    /// Tokens reserved per request when no per-request ceiling applies.
    pub fn reserve_tokens(&self) -> u64 {
        self.reserve_tokens
    }

    /// How long a proxied WebSocket may stay open, and stay silent.
    pub fn websocket_limits(&self) -> (Duration, Duration) {
        (self.websocket_max, self.websocket_idle)
    }

    /// The largest request body this upstream accepts.
    pub fn max_request_body_bytes(&self) -> u64 {
        self.max_request_body_bytes
    }

    /// `(scheme, host, port)` of the base URL: what the connector sees for every request here.
    pub(crate) fn origin(&self) -> (String, String, u16) {
        let default_port = if self.scheme == Scheme::HTTPS { 443 } else { 80 };
        (
            self.scheme.as_str().to_owned(),
            self.authority.host().to_ascii_lowercase(),
            self.authority.port_u16().unwrap_or(default_port),
        )
    }

    /// The upstream URI for a client path below the upstream (`""` or starting with `/`, still
    /// percent-encoded as the client sent it) and a query already stripped of the client's credential.
    ///
    /// The key is appended to the query when it travels there: the result must never be logged.
    pub(crate) fn uri(&self, path: &str, query: Option<&str>, key: &str) -> Option<Uri> {
        let mut target = String::with_capacity(self.base_path.len() + path.len() + 64);
        target.push_str(&self.base_path);
        target.push_str(path);
        if target.is_empty() {
            target.push('/');
        }
        let mut separator = '?';
        if let Some(query) = query.filter(|query| !query.is_empty()) {
            target.push('?');
            target.push_str(query);
            separator = '&';
        }
        if let Credential::Query { name } = &self.credential {
            target.push(separator);
            target.push_str(name);
            target.push('=');
            target.push_str(&percent_encode(key));
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .ok()
    }
}

/// Checks a header name from the configuration: valid, and not one sidekey sets or strips itself.
fn managed_header_name(
    upstream: &str,
    what: &'static str,
    text: &str,
) -> Result<HeaderName, UpstreamConfigError> {
    let refuse = |reason| UpstreamConfigError::InvalidHeader {
        name: upstream.to_owned(),
        what,
        header: text.to_owned(),
        reason,
    };
    let header = HeaderName::from_bytes(text.as_bytes()).map_err(|_| refuse("is not a valid header name"))?;
    if headers::is_hop_by_hop(&header) || headers::is_managed(&header) {
        return Err(refuse("is set or removed by sidekey itself"));
    }
    Ok(header)
}

/// Splits a base URL into scheme, authority and path (without its trailing `/`).
fn parse_base_url(name: &str, url: &str) -> Result<(Scheme, Authority, String), UpstreamConfigError> {
    let refuse =
        |reason| UpstreamConfigError::InvalidBaseUrl { name: name.to_owned(), url: url.to_owned(), reason };
    if url.contains('@') {
        // Not even echoed: `https://user:password@host` would print the password.
        return Err(UpstreamConfigError::InvalidBaseUrl {
            name: name.to_owned(),
            url: "<redacted>".to_owned(),
            reason: "must not hold credentials (the key is injected per request)",
        });
    }
    if url.contains('#') {
        return Err(refuse("must not have a fragment"));
    }
    let uri: Uri = url.parse().map_err(|_| refuse("is not a URL"))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| refuse("must start with http:// or https://"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(refuse("must start with http:// or https://"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| refuse("has no host"))?;
    if authority.host().is_empty() {
        return Err(refuse("has no host"));
    }
    if uri.query().is_some() {
        return Err(refuse("must not have a query (use credential_query or headers)"));
    }
    let path = uri.path().trim_end_matches('/');
    if path.split('/').any(headers::is_dot_segment) {
        return Err(refuse("must not contain . or .. segments"));
    }
    Ok((scheme, authority, path.to_owned()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a query name or value.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base_url: &str) -> UpstreamSettings {
        let mut settings = UpstreamSettings::new("openai", base_url);
        settings.allowed_secret_key_ids = vec!["openai-*".to_owned(), "shared".to_owned()];
        settings
    }

    fn secret(name: &str) -> SecretRef {
        SecretRef::parse(name).unwrap()
    }

    #[test]
    fn patterns_match_exact_names_and_trailing_star_prefixes() {
        let upstream = Upstream::new(&settings("https://api.openai.com")).unwrap();
        assert!(upstream.allows(&secret("openai-prod")));
        assert!(upstream.allows(&secret("openai-")));
        assert!(upstream.allows(&secret("shared")));
        assert!(!upstream.allows(&secret("shared2")));
        assert!(!upstream.allows(&secret("anthropic-prod")));
        assert!(!upstream.allows(&secret("openai")));
        assert_eq!(SecretPattern::parse("*"), Some(SecretPattern::Prefix(String::new())));
        assert!(SecretPattern::Prefix(String::new()).matches(&secret("anything")));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for pattern in ["", "open*ai", "**", "a b", "openai-**", "*openai", "é*"] {
            assert_eq!(SecretPattern::parse(pattern), None, "{pattern:?}");
        }
        let mut bad = settings("https://api.openai.com");
        bad.allowed_secret_key_ids = vec!["open ai".to_owned()];
        assert!(matches!(Upstream::new(&bad), Err(UpstreamConfigError::InvalidPattern { .. })));
        bad.allowed_secret_key_ids = Vec::new();
        assert!(matches!(Upstream::new(&bad), Err(UpstreamConfigError::NothingAllowed(_))));
    }

    #[test]
    fn base_urls_must_be_plain_http_or_https() {
        for url in [
            "api.openai.com",
            "ftp://example.com",
            "https://",
            "https://example.com/?a=1",
            "https://example.com/#x",
            "https://user:pw@example.com",
            "https://example.com/a/../b",
            "not a url",
        ] {
            assert!(Upstream::new(&settings(url)).is_err(), "{url}");
        }
        let refused = Upstream::new(&settings("https://user:hunter2@example.com")).unwrap_err();
        assert!(!refused.to_string().contains("hunter2"), "{refused}");
    }

    #[test]
    fn names_must_be_one_path_segment() {
        for name in ["", "a/b", "..", "with space", &"x".repeat(65)] {
            let mut bad = settings("https://example.com");
            bad.name = name.to_owned();
            assert!(matches!(Upstream::new(&bad), Err(UpstreamConfigError::InvalidName(_))), "{name:?}");
        }
    }

    #[test]
    fn paths_join_under_the_base_path_and_the_query_key_is_encoded() {
        let upstream = Upstream::new(&settings("http://127.0.0.1:9000/api/")).unwrap();
        assert_eq!(
            upstream.uri("/v1/chat", Some("a=1"), "k").unwrap().to_string(),
            "http://127.0.0.1:9000/api/v1/chat?a=1"
        );
        assert_eq!(upstream.uri("", None, "k").unwrap().to_string(), "http://127.0.0.1:9000/api");
        let root = Upstream::new(&settings("https://example.com")).unwrap();
        assert_eq!(root.uri("", None, "k").unwrap().to_string(), "https://example.com/");
        assert_eq!(root.origin(), ("https".to_owned(), "example.com".to_owned(), 443));

        let mut query = settings("https://example.com/v1beta");
        query.credential_query = Some("key".to_owned());
        let upstream = Upstream::new(&query).unwrap();
        assert_eq!(
            upstream.uri("/models", Some("alt=sse"), "a b&c=d").unwrap().to_string(),
            "https://example.com/v1beta/models?alt=sse&key=a%20b%26c%3Dd"
        );
        assert_eq!(
            upstream.uri("/models", None, "k").unwrap().to_string(),
            "https://example.com/v1beta/models?key=k"
        );
    }

    #[test]
    fn credential_and_static_headers_may_not_be_managed_headers() {
        for header in
            ["connection", "host", "transfer-encoding", "x-sidekey-subject", "content-length", "bad header"]
        {
            let mut bad = settings("https://example.com");
            bad.credential_header = header.to_owned();
            assert!(
                matches!(Upstream::new(&bad), Err(UpstreamConfigError::InvalidHeader { .. })),
                "{header}"
            );
            let mut bad = settings("https://example.com");
            bad.headers.insert(header.to_owned(), "v".to_owned());
            assert!(
                matches!(Upstream::new(&bad), Err(UpstreamConfigError::InvalidHeader { .. })),
                "{header}"
            );
        }
        let mut clash = settings("https://example.com");
        clash.headers.insert("Authorization".to_owned(), "Bearer other".to_owned());
        assert!(Upstream::new(&clash).is_err());
        let mut fine = settings("https://example.com");
        fine.credential_header = "x-api-key".to_owned();
        fine.headers.insert("anthropic-version".to_owned(), "2023-06-01".to_owned());
        assert!(Upstream::new(&fine).is_ok());
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let mut bad = settings("https://example.com");
        bad.response_timeout_ms = 0;
        assert!(matches!(Upstream::new(&bad), Err(UpstreamConfigError::Zero { .. })));
    }
}
