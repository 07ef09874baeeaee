//! The HTTP side's settings as configuration spells them: `[http]`, `[cors]` and `[[upstreams]]`
//! (the latter is [`UpstreamSettings`] itself).

use std::num::NonZeroU32;
use std::time::Duration;

use poem::http::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cors::{CorsConfigError, CorsSettings};
use crate::rate_limit::FailureQuota;
use crate::{HttpSettings, IssueLimiter, Surface, UpstreamSettings};

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
    /// Whether `/docs` (the interactive page) and `/openapi.json` are served.
    pub docs: bool,
    /// Sessions one client address may create per minute (`POST /v1/sessions`, a burst of the whole
    /// minute's allowance); past it, 429 `rate_limited`. 0 turns the limit off.
    pub issue_per_client_per_minute: u32,
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

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: HttpSettings::DEFAULT_BODY_LIMIT,
            shutdown_grace_seconds: DEFAULT_SHUTDOWN_GRACE.as_secs(),
            failed_requests_per_second: DEFAULT_FAILED_PER_SECOND,
            failed_requests_burst: DEFAULT_FAILED_BURST,
            client_address_header: None,
            issue_per_client_per_minute: DEFAULT_ISSUE_PER_CLIENT_PER_MINUTE,
            docs: true,
        }
    }
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
        Ok(HttpSettings {
            body_limit: self.body_limit_bytes,
            failure_quota,
            client_address_header,
            docs: self.docs,
            surface: Surface::All,
        })
    }

    /// The issuance limiter, when on.
    pub fn issue_limiter(&self) -> Option<IssueLimiter> {
        NonZeroU32::new(self.issue_per_client_per_minute).map(IssueLimiter::new)
    }

    /// How long in-flight requests may take to finish on shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
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
