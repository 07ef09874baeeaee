//! The HTTP side's settings as configuration spells them: `[http]`, `[cors]` and `[[upstreams]]`
//! (the latter is [`UpstreamSettings`] itself).

use std::num::NonZeroU32;
use std::time::Duration;

use poem::http::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cors::{CorsConfigError, CorsSettings};
use crate::rate_limit::FailureQuota;
use crate::{HttpSettings, ServerSettings, Timeouts, UpstreamSettings};

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
    /// Behind a trusted reverse proxy, the header holding the client's address (`x-forwarded-for`: its
    /// last entry; `x-real-ip`); unset: the TCP peer. Never set it when clients reach sidekey directly.
    pub client_address_header: Option<String>,
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
/// is left after [`RESERVED_DESCRIPTORS`], at least 1. The last quarter is for upstream connections: an
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
            client_address_header: None,
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
    /// [`HttpConfigError`] when `client_address_header` is not a header name, or the burst is 0 with a
    /// rate set.
    pub fn settings(&self) -> Result<HttpSettings, HttpConfigError> {
        let failure_quota = match NonZeroU32::new(self.failed_requests_per_second) {
            None => None,
            Some(per_second) => Some(FailureQuota {
                per_second,
                burst: NonZeroU32::new(self.failed_requests_burst).ok_or(HttpConfigError::ZeroBurst)?,
            }),
        };
        let client_address_header = self
            .client_address_header
            .as_deref()
            .map(|name| {
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| HttpConfigError::ClientAddressHeader(name.to_owned()))
            })
            .transpose()?;
        Ok(HttpSettings { body_limit: self.body_limit_bytes, failure_quota, client_address_header })
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
