//! The HTTP side's settings as configuration spells them: `[http]`, `[cors]` and `[[upstreams]]`
//! (the latter is [`UpstreamSettings`] itself).

use std::num::NonZeroU32;
use std::time::Duration;

use poem::http::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cors::{CorsConfigError, CorsSettings};
use crate::rate_limit::FailureQuota;
use crate::trusted_proxies::{InvalidNetwork, ProxyTrust};
use crate::{HttpSettings, IssueLimiter, ServerSettings, Surface, Timeouts, UpstreamSettings};

/// `[http]`: limits of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HttpConfig {
    /// Largest JSON request body, in bytes (413 above).
    pub body_limit_bytes: usize,
    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish, in seconds.
    pub shutdown_grace_seconds: u64,
    /// Failed requests (400, 401, 413) a client address may send per second, sustained; past that and
    /// the burst, its `/v1/` requests get 429 until it slows down. 0 turns the limit off.
    pub failed_requests_per_second: u32,
    /// Failed requests a client address may send at once.
    pub failed_requests_burst: u32,
    /// The reverse proxies in front of sidekey, as CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses:
    /// their `Forwarded`, `X-Forwarded-*` and `X-Real-IP` are believed (the client address is then the
    /// right-most `X-Forwarded-For` entry that is not one of them) and passed on, extended. From any other
    /// peer those headers are dropped and replaced, and the client address is the TCP peer.
    pub trusted_proxies: Vec<String>,
    /// Deprecated: list the proxies in `trusted_proxies` instead. Set while `trusted_proxies` is empty, it
    /// believes every peer, as before: the client address is the last entry of this header
    /// (`x-forwarded-for` or `x-real-ip`) and forwarded headers pass on from anyone. Ignored otherwise.
    pub client_address_header: Option<String>,
    /// Whether `/docs` (the interactive page) and `/openapi.json` are served.
    pub docs: bool,
    /// Sessions one client address may create per minute (`POST /v1/sessions`, a burst of the whole
    /// minute's allowance); past it, 429 `rate_limited`. 0 turns the limit off.
    pub issue_per_client_per_minute: u32,
    /// Longest a request head may take, from its first byte to its last, in milliseconds; past it the
    /// connection is closed (no answer is owed: no request has been read).
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight and no byte either way for this long is closed, in
    /// milliseconds (gracefully: never in the middle of an answer, and a long streamed answer is a
    /// request in flight). Behind a reverse proxy, keep it above the proxy's own idle timeout for its
    /// upstream connections, or it may reuse one just as sidekey closes it.
    pub idle_timeout_ms: u64,
    /// Largest request head, in bytes: the request line and headers (on HTTP/2 the header list as
    /// HPACK counts it, 32 bytes more per header); larger ones get 431.
    pub max_header_bytes: u32,
    /// Most connections served at once; more are accepted and closed at once, and counted in
    /// `sidekey_connections_refused_total`. Unset: three quarters of what the open-file limit leaves
    /// after 128 descriptors (the quarter for upstream connections; the 128 for Redis, PostgreSQL, the
    /// listeners, logs and the runtime).
    pub max_connections: Option<usize>,
}

/// Default `failed_requests_per_second`: a client that mistypes a token now and then is never limited;
/// one that guesses tokens is, within a second.
const DEFAULT_FAILED_PER_SECOND: u32 = 20;
/// Default `failed_requests_burst`: room for a page that retries a batch of calls with a stale token.
const DEFAULT_FAILED_BURST: u32 = 100;
/// Default `issue_per_client_per_minute`: an app backend issuing for all its users from one address
/// creates far fewer than 6,000 sessions a minute (100 a second); a flooder creates thousands a second.
const DEFAULT_ISSUE_PER_CLIENT_PER_MINUTE: u32 = 6000;
/// Default `shutdown_grace_seconds`: a streamed answer of a few dozen seconds still finishes.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default `header_read_timeout_ms`, the contract's: a real client sends its head in one round trip; a
/// slowloris that sends a byte every few seconds is cut within 10 s.
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `idle_timeout_ms`, the contract's: as long as nginx's and common load balancers' idle
/// timeouts, so pooled connections are reused rather than reopened.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `max_header_bytes`, the contract's: what poem's server allowed on HTTP/2, and room for a
/// token, a JWT and a browser's cookies.
const DEFAULT_MAX_HEADER_BYTES: u32 = 16 * 1024;
/// Smallest `max_header_bytes`: below it a request with a caller JWT and a browser's usual headers fails.
const MIN_MAX_HEADER_BYTES: u32 = 1024;
/// Largest `max_header_bytes`: hyper's HTTP/1.1 read buffer holds 408 KiB at most, so a larger limit
/// could not be honoured.
const MAX_MAX_HEADER_BYTES: u32 = 400 * 1024;
/// Descriptors kept out of `max_connections`' default for what is not a client connection: stdio, the
/// listeners, the runtime's epoll and signal descriptors, the Redis and PostgreSQL pools (16 by
/// default), DNS lookups and secret files, with room to spare.
const RESERVED_DESCRIPTORS: u64 = 128;

/// The default `max_connections` under an open-file limit of `open_file_limit`: three quarters of what
/// is left after `RESERVED_DESCRIPTORS`, at least 1. The last quarter is for upstream connections: an
/// HTTP/2 upstream multiplexes every proxied request on one connection, an HTTP/1.1 one takes a
/// socket per request in flight, and 64 idle ones per origin stay pooled.
///
/// Examples: 1,024 → 672; 65,536 → 49,056; 1,048,576 → 786,336.
pub fn default_max_connections(open_file_limit: u64) -> usize {
    let reserved = RESERVED_DESCRIPTORS.min(open_file_limit / 2);
    let usable = (open_file_limit - reserved) / 4 * 3;
    usize::try_from(usable).unwrap_or(usize::MAX).max(1)
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: HttpSettings::DEFAULT_BODY_LIMIT,
            shutdown_grace_seconds: DEFAULT_SHUTDOWN_GRACE.as_secs(),
            failed_requests_per_second: DEFAULT_FAILED_PER_SECOND,
            failed_requests_burst: DEFAULT_FAILED_BURST,
            trusted_proxies: Vec::new(),
            client_address_header: None,
            issue_per_client_per_minute: DEFAULT_ISSUE_PER_CLIENT_PER_MINUTE,
            docs: true,
            header_read_timeout_ms: millis(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout_ms: millis(DEFAULT_IDLE_TIMEOUT),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_connections: None,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `[http]` or `[cors]` settings that cannot work: refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpConfigError {
    /// A rate without a burst.
    #[error("http.failed_requests_burst must be at least 1 (or set the rate to 0)")]
    ZeroBurst,
    /// `client_address_header` is not a header name.
    #[error("http.client_address_header: {0:?} is not a header name")]
    ClientAddressHeader(String),
    /// An entry of `trusted_proxies` is not a network.
    #[error("http.trusted_proxies: {0}")]
    TrustedProxies(#[from] InvalidNetwork),
    /// A timeout of 0.
    #[error("http.{0} must be at least 1 (milliseconds)")]
    ZeroTimeout(&'static str),
    /// `max_header_bytes` outside what can work.
    #[error(
        "http.max_header_bytes must lie between {MIN_MAX_HEADER_BYTES} and {MAX_MAX_HEADER_BYTES}, not {0}"
    )]
    MaxHeaderBytes(u32),
    /// `max_connections` of 0.
    #[error("http.max_connections must be at least 1 (or unset, to follow the open-file limit)")]
    ZeroConnections,
    /// A CORS origin is not one.
    #[error(transparent)]
    Cors(#[from] CorsConfigError),
}

impl HttpConfig {
    /// The HTTP layer's settings.
    ///
    /// # Errors
    /// [`HttpConfigError`] when a `trusted_proxies` entry is not a network, `client_address_header` is
    /// not a header name, or the burst is 0 with a rate set.
    pub fn settings(&self) -> Result<HttpSettings, HttpConfigError> {
        let failure_quota = match NonZeroU32::new(self.failed_requests_per_second) {
            None => None,
            Some(per_second) => Some(FailureQuota {
                per_second,
                burst: NonZeroU32::new(self.failed_requests_burst).ok_or(HttpConfigError::ZeroBurst)?,
            }),
        };
        Ok(HttpSettings {
            body_limit: self.body_limit_bytes,
            failure_quota,
            proxy_trust: self.proxy_trust()?,
            docs: self.docs,
            surface: Surface::All,
        })
    }

    /// The issuance limiter, when on.
    pub fn issue_limiter(&self) -> Option<IssueLimiter> {
        NonZeroU32::new(self.issue_per_client_per_minute).map(IssueLimiter::new)
    }

    /// Whose forwarding headers are believed: `trusted_proxies`, else every peer when the deprecated
    /// `client_address_header` is set, else nobody.
    fn proxy_trust(&self) -> Result<ProxyTrust, HttpConfigError> {
        match &self.client_address_header {
            Some(name) if self.trusted_proxies.is_empty() => {
                let address_header = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| HttpConfigError::ClientAddressHeader(name.to_owned()))?;
                Ok(ProxyTrust::EveryPeer { address_header })
            }
            _ => Ok(ProxyTrust::networks(&self.trusted_proxies)?),
        }
    }

    /// What an operator should hear at start-up about these settings: the deprecated
    /// `client_address_header`, and what it does here.
    pub fn warnings(&self) -> Vec<String> {
        let Some(name) = &self.client_address_header else { return Vec::new() };
        vec![if self.trusted_proxies.is_empty() {
            format!(
                "http.client_address_header ({name:?}) is deprecated: it believes the forwarding headers of \
                 every peer, so a client that reaches sidekey directly chooses its own address; list your \
                 reverse proxies in http.trusted_proxies instead"
            )
        } else {
            "http.client_address_header is deprecated and ignored: http.trusted_proxies is set".to_owned()
        }]
    }

    /// How the server treats connections, `max_connections` defaulting from `open_file_limit` (the
    /// process's soft limit on open files, as raised at start-up): [`default_max_connections`].
    ///
    /// # Errors
    /// [`HttpConfigError`] for a timeout or a cap of 0, or a head limit outside
    /// 1 KiB to 400 KiB.
    pub fn server_settings(&self, open_file_limit: u64) -> Result<ServerSettings, HttpConfigError> {
        let timeout = |millis: u64, key: &'static str| match millis {
            0 => Err(HttpConfigError::ZeroTimeout(key)),
            millis => Ok(Duration::from_millis(millis)),
        };
        let timeouts = Timeouts {
            header_read: timeout(self.header_read_timeout_ms, "header_read_timeout_ms")?,
            idle: timeout(self.idle_timeout_ms, "idle_timeout_ms")?,
        };
        if !(MIN_MAX_HEADER_BYTES..=MAX_MAX_HEADER_BYTES).contains(&self.max_header_bytes) {
            return Err(HttpConfigError::MaxHeaderBytes(self.max_header_bytes));
        }
        let max_connections = match self.max_connections {
            Some(0) => return Err(HttpConfigError::ZeroConnections),
            Some(max) => max,
            None => default_max_connections(open_file_limit),
        };
        Ok(ServerSettings {
            timeouts,
            max_header_bytes: self.max_header_bytes,
            max_connections,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
        })
    }
}

/// `[cors]`: browser origins allowed on the session and proxy routes (none: CORS off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct CorsConfig {
    /// Browser origins (`scheme://host[:port]`) allowed on the session and proxy routes.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer, in seconds.
    pub max_age_seconds: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self { allowed_origins: Vec::new(), max_age_seconds: CorsSettings::DEFAULT_MAX_AGE.as_secs() }
    }
}

impl CorsConfig {
    /// The validated settings.
    ///
    /// # Errors
    /// [`HttpConfigError::Cors`] for an entry that is not an origin.
    pub fn settings(&self) -> Result<CorsSettings, HttpConfigError> {
        Ok(CorsSettings::new(&self.allowed_origins, Duration::from_secs(self.max_age_seconds))?)
    }
}

/// Upstreams as configured: `[[upstreams]]` deserializes straight into [`UpstreamSettings`].
pub type UpstreamsConfig = Vec<UpstreamSettings>;

#[cfg(test)]
mod tests {
    use super::*;

    fn with(trusted_proxies: &[&str], client_address_header: Option<&str>) -> HttpConfig {
        HttpConfig {
            trusted_proxies: trusted_proxies.iter().map(|network| (*network).to_owned()).collect(),
            client_address_header: client_address_header.map(str::to_owned),
            ..HttpConfig::default()
        }
    }

    #[test]
    fn nobody_is_trusted_and_nothing_is_warned_by_default() {
        let config = HttpConfig::default();
        assert_eq!(config.settings().unwrap().proxy_trust, ProxyTrust::default());
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn trusted_proxies_are_parsed_and_a_bad_entry_is_refused_by_name() {
        let trust = with(&["10.0.0.0/8", "192.0.2.1"], None).settings().unwrap().proxy_trust;
        assert!(trust.trusts("10.9.8.7".parse().unwrap()) && trust.trusts("192.0.2.1".parse().unwrap()));
        assert!(!trust.trusts("192.0.2.2".parse().unwrap()));
        let error = with(&["10.0.0.0/8", "10.0.0.0/40"], None).settings().unwrap_err();
        assert!(matches!(&error, HttpConfigError::TrustedProxies(_)), "{error}");
        assert!(error.to_string().contains("http.trusted_proxies: \"10.0.0.0/40\""), "{error}");
    }

    #[test]
    fn the_deprecated_header_alone_trusts_every_peer_and_is_warned_about() {
        let config = with(&[], Some(" X-Forwarded-For "));
        let address_header = HeaderName::from_static("x-forwarded-for");
        assert_eq!(config.settings().unwrap().proxy_trust, ProxyTrust::EveryPeer { address_header });
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("deprecated") && warnings[0].contains("trusted_proxies"),
            "{warnings:?}"
        );
        let bad = with(&[], Some("not a header")).settings().unwrap_err();
        assert_eq!(bad, HttpConfigError::ClientAddressHeader("not a header".to_owned()));
    }

    #[test]
    fn the_deprecated_header_is_ignored_beside_trusted_proxies_and_says_so() {
        let config = with(&["127.0.0.1/32"], Some("x-real-ip"));
        let trust = config.settings().unwrap().proxy_trust;
        assert_eq!(trust, ProxyTrust::networks(&["127.0.0.1/32"]).unwrap());
        assert!(!trust.trusts("192.0.2.1".parse().unwrap()));
        assert_eq!(
            config.warnings(),
            ["http.client_address_header is deprecated and ignored: http.trusted_proxies is set"]
        );
    }

    #[test]
    fn the_default_connection_cap_leaves_room_below_the_open_file_limit() {
        assert_eq!(default_max_connections(1024), 672);
        assert_eq!(default_max_connections(20_000), 14_904);
        assert_eq!(default_max_connections(65_536), 49_056);
        assert_eq!(default_max_connections(1_048_576), 786_336);
        for limit in [0, 1, 2, 3, 64, 255, 256, 257, 1024, u64::from(u32::MAX), u64::MAX] {
            let cap = default_max_connections(limit) as u64;
            assert!(cap >= 1, "{limit}: never a server that refuses everyone");
            assert!(limit < 4 || cap < limit, "{limit}: {cap} leaves no descriptor for anything else");
        }
    }

    #[test]
    fn the_default_server_settings_are_the_contracts() {
        let settings = HttpConfig::default().server_settings(1024).unwrap();
        assert_eq!(settings.timeouts.header_read, Duration::from_secs(10));
        assert_eq!(settings.timeouts.idle, Duration::from_secs(60));
        assert_eq!(settings.max_header_bytes, 16_384);
        assert_eq!(settings.max_connections, 672);
        assert_eq!(settings.shutdown_grace, Duration::from_secs(30));
        let set = HttpConfig { max_connections: Some(5), ..HttpConfig::default() };
        assert_eq!(set.server_settings(1024).unwrap().max_connections, 5, "a set cap is kept");
    }

    #[test]
    fn limits_that_cannot_work_are_refused_with_the_key_named() {
        let refusal = |config: HttpConfig| config.server_settings(1024).unwrap_err().to_string();
        let refused = refusal(HttpConfig { header_read_timeout_ms: 0, ..HttpConfig::default() });
        assert!(refused.contains("http.header_read_timeout_ms"), "{refused}");
        let refused = refusal(HttpConfig { idle_timeout_ms: 0, ..HttpConfig::default() });
        assert!(refused.contains("http.idle_timeout_ms"), "{refused}");
        let refused = refusal(HttpConfig { max_connections: Some(0), ..HttpConfig::default() });
        assert!(refused.contains("http.max_connections"), "{refused}");
        for bytes in [0, 1023, 400 * 1024 + 1, u32::MAX] {
            let refused = refusal(HttpConfig { max_header_bytes: bytes, ..HttpConfig::default() });
            assert!(refused.contains("http.max_header_bytes"), "{refused}");
        }
        for bytes in [1024, 400 * 1024] {
            let accepted = HttpConfig { max_header_bytes: bytes, ..HttpConfig::default() };
            assert!(accepted.server_settings(1024).is_ok(), "{bytes}");
        }
    }
}
